"""The playground at ``/``, driven in Chromium against the real embedded server with the tiny model.

Every wait is Playwright's auto-waiting (``expect``, ``wait_for_function``); nothing sleeps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from support import GatedFamily, RedisServer, StepRecorder, RunningServer, gate_pipeline, serve
from ui_support import AUTH, JOB_MS, USER_KEY, open_playground, screenshot, wait_until_playing

from reelserve.schemas.slo import DegradeLevel

# 2**53 + 1: the smallest integer a JS number cannot hold, so showing it exactly proves the page never
# let it become a Number.
UNSAFE_SEED = "9007199254740993"


def _parameters(server: RunningServer) -> dict:
    return server.client.get("/v1/models", headers=AUTH).json()["data"][0]["parameters"]


def _raw_seed(server: RunningServer, video_id: str) -> str:
    """The seed's digits exactly as the API wrote them (no float in between)."""
    response = server.client.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.status_code == 200
    match = re.search(r'"seed":\s*(\d+)', response.text)
    assert match, response.text
    return match[1]


def _api_ids(server: RunningServer) -> list[str]:
    return [
        v["id"] for v in server.client.get("/v1/videos", params={"limit": 100}, headers=AUTH).json()["data"]
    ]


def options(label: str, page: Page) -> list[str]:
    """The values a select offers."""
    return page.get_by_label(label, exact=True).locator("option").evaluate_all("os => os.map(o => o.value)")

def test_asks_for_a_key_then_offers_the_models_defaults_and_limits(
    page: Page, ui_server: RunningServer
) -> None:
    page.goto(ui_server.url)
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_visible()
    expect(key).to_have_attribute("type", "password")
    expect(page.locator("#app")).to_be_hidden()

    key.fill("not-a-key")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-error")).to_contain_text("invalid API key")
    expect(page.locator("#app")).to_be_hidden()

    key.fill(USER_KEY)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#app")).to_be_visible()
    params = _parameters(ui_server)
    steps = page.get_by_label("Steps")
    expect(steps).to_have_value(str(params["num_inference_steps"]["default"]))
    expect(steps).to_have_attribute("max", str(params["num_inference_steps"]["max"]))
    expect(steps).to_have_attribute("min", str(params["num_inference_steps"]["min"]))
    expect(page.get_by_label("FPS")).to_have_value(str(params["fps"]["default"]))
    expect(page.get_by_label("Width")).to_have_value(str(params["width"]["default"]))

    # The selects offer only what the API accepts: multiples of 16 up to the max, 4n+1 frame counts.
    width = params["width"]
    assert options("Width", page) == [str(v) for v in range(width["min"], width["max"] + 1, width["multiple_of"])]
    frames = params["num_frames"]
    # 4n+1 counts, from the first that makes a video (a single frame is a still): no "1 frames · 0 s".
    assert options("Frames", page) == [str(n) for n in range(max(2, frames["min"]), frames["max"] + 1) if n % 4 == 1]
    expect(page.get_by_label("Frames")).to_have_value(str(frames["default"]))
    assert options("Priority", page) == params["priority"]["enum"]
    expect(page.get_by_label("Priority")).to_have_value(params["priority"]["default"])
    assert page.evaluate("sessionStorage.getItem('reelserve.apiKey')") == USER_KEY

    # Forgetting the key asks for one again.
    page.get_by_role("button", name="Forget key").click()
    expect(key).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('reelserve.apiKey')") is None


def test_keyboard_submit_shows_live_progress_then_plays_the_video(
    page: Page, ui_server: RunningServer
) -> None:
    open_playground(page, ui_server)
    # Every value the bar takes, recorded in the page as it changes.
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById('progress');
            new MutationObserver(() => window.progressSeen.push(Number(bar.getAttribute('value'))))
                .observe(bar, { attributes: true, attributeFilter: ['value'] });
        }"""
    )
    # The run is held before its 20th of 40 steps until the page shows progress, so the events are
    # seen live however fast the model is (tiny's 40 steps can finish before the page subscribes).
    lanes = ui_server.worker.engine.runner
    assert lanes is not None and lanes.lanes == 1
    held = StepRecorder(lanes.runners[0].family, hold_at=20)
    lanes.runners[0].family = held
    try:
        page.get_by_label("Steps").fill("40")
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.fill("a red ball bouncing")
        prompt.press("Control+Enter")
        assert held.held.wait(JOB_MS / 1000)
        page.wait_for_function("() => window.progressSeen.some(v => v > 0 && v < 100)", timeout=JOB_MS)
    finally:
        held.gate.set()
        lanes.runners[0].family = held.real

    wait_until_playing(page)
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    seen = page.evaluate("window.progressSeen")
    assert len({v for v in seen if 0 < v < 100}) >= 2, seen
    assert seen[-1] == 100, seen

    video_id = page.locator("#detail-id").text_content()
    assert video_id and video_id.startswith("video_")
    expect(page.locator("#detail-seed")).to_have_text(_raw_seed(ui_server, video_id))
    expect(page.locator("#detail-steps")).to_have_text("40")
    expect(page.locator("#detail-size")).to_have_text("64x64")
    expect(page.locator("#detail-timings")).to_have_text(
        re.compile(r"queue \d+\.\d+ s · inference \d+\.\d+ s · encode \d+\.\d+ s · total \d+\.\d+ s")
    )
    download = page.get_by_role("link", name="Download MP4")
    expect(download).to_have_attribute("download", f"{video_id}.mp4")
    expect(download).to_have_attribute("href", re.compile(r"^blob:"))
    expect(page.locator("#badges .badge")).to_have_count(0)  # a fresh run: neither cached nor degraded
    # A 64x64 clip is drawn pixel-crisp at a whole multiple of its size, not smoothed into the box.
    page.wait_for_function("() => document.getElementById('result-video').dataset.scale")
    width, shown, rendering = page.evaluate(
        "() => { const v = document.getElementById('result-video');"
        " return [v.videoWidth, v.getBoundingClientRect().width, getComputedStyle(v).imageRendering]; }"
    )
    assert width == 64 and shown % 64 == 0 and shown >= 128 and rendering == "pixelated", (width, shown, rendering)


def test_cancel_a_running_job(page: Page, ui_server: RunningServer) -> None:
    open_playground(page, ui_server)
    params = _parameters(ui_server)
    # The largest job tiny allows takes several seconds: plenty of time to cancel it mid-run.
    page.get_by_label("Width").select_option(str(params["width"]["max"]))
    page.get_by_label("Height").select_option(str(params["height"]["max"]))
    page.get_by_label("Frames").select_option(str(params["num_frames"]["max"]))
    page.get_by_label("Steps").fill(str(params["num_inference_steps"]["max"]))
    page.get_by_label("Prompt", exact=True).fill(f"a long one {uuid.uuid4().hex[:6]}")
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#job-status")).to_contain_text(
        re.compile(rf"step \d+ of {params['num_inference_steps']['max']}"), timeout=JOB_MS
    )
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=JOB_MS)
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    video_id = page.locator("#detail-id").text_content()
    assert ui_server.client.get(f"/v1/videos/{video_id}", headers=AUTH).json()["status"] == "cancelled"
    expect(page.locator(f'#history > li[data-id="{video_id}"]')).to_contain_text("Cancelled", timeout=JOB_MS)


def test_an_invalid_value_shows_the_apis_message_next_to_the_field(
    page: Page, ui_server: RunningServer
) -> None:
    open_playground(page, ui_server)
    before = _api_ids(ui_server)
    too_many = _parameters(ui_server)["num_inference_steps"]["max"] + 1
    expected = ui_server.client.post(
        "/v1/videos", json={"prompt": "x", "num_inference_steps": too_many}, headers=AUTH
    ).json()["error"]
    assert expected["param"] == "num_inference_steps"

    steps = page.get_by_label("Steps")
    steps.fill(str(too_many))  # novalidate: the browser lets it through, the API judges
    page.get_by_label("Prompt", exact=True).fill("too many steps")
    page.get_by_role("button", name="Generate").click()

    error = page.locator("#error-num_inference_steps")
    expect(error).to_have_text(expected["message"])
    expect(error).to_have_attribute("role", "alert")
    expect(steps).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-error")).to_be_empty()
    assert _api_ids(ui_server) == before  # nothing was created

    # An empty prompt is the API's call too, shown by the prompt; the steps error clears on resubmit.
    steps.fill("4")
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#error-prompt")).to_contain_text("prompt")
    expect(error).to_be_empty()
    expect(steps).not_to_have_attribute("aria-invalid", "true")
    assert _api_ids(ui_server) == before


def test_the_same_request_twice_is_served_from_the_cache(page: Page, ui_server: RunningServer) -> None:
    open_playground(page, ui_server)
    page.get_by_label("Prompt", exact=True).fill(f"a cached ball {uuid.uuid4().hex[:6]}")
    page.get_by_label("Seed").fill(UNSAFE_SEED)
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    first_id = page.locator("#detail-id").text_content()
    expect(page.locator("#detail-seed")).to_have_text(UNSAFE_SEED)
    expect(page.locator("#badge-cached")).to_have_count(0)

    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#detail-id")).not_to_have_text(first_id or "", timeout=JOB_MS)
    expect(page.locator("#badge-cached")).to_be_visible(timeout=JOB_MS)
    expect(page.locator("#job-status")).to_have_text("Completed (from the cache)")
    expect(page.locator("#detail-seed")).to_have_text(UNSAFE_SEED)
    wait_until_playing(page)
    second_id = page.locator("#detail-id").text_content()
    assert _raw_seed(ui_server, second_id or "") == UNSAFE_SEED
    assert ui_server.client.get(f"/v1/videos/{second_id}", headers=AUTH).json()["cached"] is True
    expect(page.locator(f'#history > li[data-id="{second_id}"] img')).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history img')].every(i => i.naturalWidth > 0)"
    )
    screenshot(page, "playground")


@pytest.fixture(scope="module")
def eventful_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server where every outcome the tiny model never has on its own happens for real: the
    semantic cache is on by default (it keeps its records in Redis), the degradation table's one level
    is reached at any load (so batch-tier requests run with at most 2 steps), and the pipeline is
    wrapped so that prompts containing "boom" raise."""
    tmp_path = tmp_path_factory.mktemp("eventful")
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    overrides = {
        "api_keys": [USER_KEY], "redis_url": redis_server.url, "cache_semantic_default": True,
        "degrade_levels": [DegradeLevel(name="always", min_queue_delay_s=0, max_steps=2)],
    }
    try:
        with serve(tmp_path / "data", **overrides) as running:
            gate_pipeline(running)
            yield running
    finally:
        redis_server.stop()


def _generate(page: Page, prompt: str, **fields: str) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for label, value in fields.items():
        control = page.get_by_label(label, exact=True)
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    page.get_by_role("button", name="Generate").click()


def test_degraded_similar_and_failed_jobs_are_explained(page: Page, eventful_server: RunningServer) -> None:
    open_playground(page, eventful_server)
    _generate(page, "boom goes the pipeline")
    expect(page.locator("#job-status")).to_contain_text("Failed: RuntimeError: boom", timeout=JOB_MS)
    expect(page.locator("#player")).to_be_hidden()
    expect(page.locator("#badges .badge")).to_have_count(0)

    _generate(page, "a dog running on the beach at sunset", Priority="batch", Steps="4", Seed="11")
    expect(page.locator("#badge-degraded")).to_have_text("degraded: num inference steps 4→2", timeout=JOB_MS)
    wait_until_playing(page)
    first = eventful_server.client.get("/v1/videos", headers=AUTH).json()["data"][0]
    assert first["degraded"] == {"num_inference_steps": {"requested": 4, "ran": 2}}
    expect(page.locator("#badges")).to_contain_text(first["degraded_reason"])
    expect(page.locator("#badge-cached")).to_have_count(0)

    _generate(page, "A dog runs along the beach at sunset.", Priority="batch", Steps="4", Seed="11")
    expect(page.locator("#badge-cached")).to_contain_text("% similar", timeout=JOB_MS)
    hit = eventful_server.client.get("/v1/videos", headers=AUTH).json()["data"][0]
    assert hit["cached"] and hit["cache_source_id"] == first["id"]
    shown = f"cached · {hit['cache_similarity'] * 100:.1f}% similar"
    expect(page.locator("#badge-cached")).to_have_text(shown)
    expect(page.locator("#badge-cached")).to_have_attribute("title", f"matched prompt: {first['prompt']}")
    wait_until_playing(page)


def test_a_waiting_job_shows_its_place_in_the_queue(page: Page, eventful_server: RunningServer) -> None:
    gate = eventful_server.worker.engine.runner.runners[0].family  # the GatedFamily the fixture installed
    assert isinstance(gate, GatedFamily)
    open_playground(page, eventful_server)
    gate.hold()
    try:
        holder = eventful_server.client.post("/v1/videos", json={"prompt": "holds the worker"}, headers=AUTH)
        assert holder.status_code == 200 and gate.entered.wait(JOB_MS / 1000)
        _generate(page, "waits its turn")
        expect(page.locator("#job-status")).to_have_text("Queued · next in line", timeout=JOB_MS)
        expect(page.locator("#cancel")).to_be_enabled()
    finally:
        gate.gate.set()
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    wait_until_playing(page)


def test_copy_as_curl_and_python_snippets_run_against_the_server(
    page: Page, ui_server: RunningServer
) -> None:
    open_playground(page, ui_server)
    tag = uuid.uuid4().hex[:6]
    page.get_by_label("Prompt", exact=True).fill(f'it\'s a "quoted" snippet {tag}')  # quotes of both kinds
    page.get_by_label("Steps").fill("3")
    page.get_by_label("Seed").fill("9223372036854775807")  # the largest seed: exact through both snippets
    page.get_by_text("Use this request from code").click()

    page.get_by_role("button", name="Copy as curl").click()
    expect(page.locator("#copy-status")).not_to_be_empty()  # copied, or told why not; never a throw
    curl = page.locator("#snippet-curl").text_content() or ""
    assert curl.startswith(f"curl -sS '{ui_server.url}/v1/videos'") and USER_KEY in curl
    run = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    created = json.loads(run.stdout)
    assert created["object"] == "video", created
    job = ui_server.client.get(f"/v1/videos/{created['id']}", headers=AUTH)
    assert job.status_code == 200
    assert job.json()["prompt"] == f'it\'s a "quoted" snippet {tag}'
    assert job.json()["num_inference_steps"] == 3
    assert _raw_seed(ui_server, created["id"]) == "9223372036854775807"

    page.get_by_role("button", name="Copy as Python").click()
    python = page.locator("#snippet-python").text_content() or ""
    assert "client.videos.create(" in python and "extra_body=" in python
    run = subprocess.run(
        [sys.executable, "-c", python], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    made_id = run.stdout.split()[0]
    job = ui_server.client.get(f"/v1/videos/{made_id}", headers=AUTH)
    assert job.status_code == 200, run.stdout
    assert job.json()["prompt"] == f'it\'s a "quoted" snippet {tag}'
    assert job.json()["num_inference_steps"] == 3
    assert job.json()["size"] == "64x64"
    assert _raw_seed(ui_server, made_id) == "9223372036854775807"


def test_phone_width_fits_and_every_control_is_labelled(phone_page: Page, ui_server: RunningServer) -> None:
    page = phone_page
    open_playground(page, ui_server)
    page.get_by_label("Prompt", exact=True).fill("a_very_long_prompt_without_any_spaces_" * 4)
    page.get_by_role("button", name="Generate").click()
    wait_until_playing(page)
    page.get_by_text("Use this request from code").click()
    expect(page.locator("#snippet-curl")).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history img')].every(i => i.naturalWidth > 0)"
    )

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
            .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    nameless = page.evaluate(
        """() => [...document.querySelectorAll('button')]
            .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label'))
            .map(b => b.outerHTML)"""
    )
    assert nameless == []
    expect(page.locator("#job-status")).to_have_attribute("aria-live", "polite")
    screenshot(page, "playground-phone")



def test_the_model_card_offers_trained_shapes_and_examples_and_warnings_show(page: Page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with serve(tmp_path / "data", model="micro", api_keys=[USER_KEY]) as running:
        open_playground(page, running)
        # Only the shapes the micro model was trained at are offered (the API takes more, warned).
        assert options("Width", page) == ["64"] and options("Height", page) == ["64"]
        assert options("Frames", page) == ["17"]
        expect(page.locator("#model-about")).to_contain_text("circle, square or triangle")
        example = page.locator("#examples button").first
        prompt = example.text_content()
        example.click()
        expect(page.get_by_label("Prompt", exact=True)).to_have_value(prompt or "-")
        page.get_by_label("Prompt", exact=True).fill("a cat playing the piano")
        page.get_by_label("Steps").fill("2")
        page.get_by_role("button", name="Generate").click()
        warning = page.locator("#warnings li")
        expect(warning).to_have_count(1)
        expect(warning).to_contain_text("(cat, playing, piano)")
        wait_until_playing(page)
        expect(warning).to_have_count(1)  # still shown with the finished video
        page.get_by_label("Prompt", exact=True).fill("a red circle moving right")
        page.get_by_role("button", name="Generate").click()
        wait_until_playing(page)
        expect(page.locator("#warnings")).to_be_hidden()
