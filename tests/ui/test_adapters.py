"""LoRA adapters in the playground, in Chromium against the embedded server with the tiny model and two
adapters from ``--adapters-dir`` (``style``, described; ``grain``, which recommends 2 steps and guidance 1):
the field lists them (and is hidden where the server takes none), chosen ones are sent as ``loras`` with
their scales, the details name what ran, a recommendation the server applies is said, a refusal shows at
the field, and the snippets send the same adapters.

Every wait is on the page (``expect``, ``wait_for_function``) or on the API; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lora_files import lora_file
from playwright.sync_api import Page, expect
from support import RunningServer, final_video, serve
from ui_support import (
    AUTH,
    JOB_MS,
    USER_KEY,
    generate,
    open_playground,
    run_snippet,
    screenshot,
    video_ids,
    video_of,
)

STEPS = "2"  # tiny at 2 steps: each job here takes a fraction of a second


@pytest.fixture(scope="module")
def adapters_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("adapters")
    lora_file(directory / "style.safetensors", seed=1)
    (directory / "style.json").write_text('{"description": "a test style"}')
    lora_file(directory / "grain.safetensors", seed=2)
    (directory / "grain.json").write_text(
        '{"description": "coarse grain, distilled", "steps": 2, "guidance": 1.0, "shift": 4.0}')
    with serve(tmp_path_factory.mktemp("ui-adapters") / "data", adapters_dir=directory, api_keys=[USER_KEY]) as running:
        yield running


def _sha256(server: RunningServer) -> dict[str, str]:
    return {a["name"]: a["sha256"] for a in server.client.get("/v1/adapters", headers=AUTH).json()["data"]}





def _choose(page: Page, name: str, scale: str | None = None) -> None:
    page.get_by_label("Adapters", exact=True).select_option(name)
    page.get_by_role("button", name="Add adapter").click()
    if scale is not None:
        page.get_by_label(f"Scale of {name}").fill(scale)


def _generate(page: Page, prompt: str) -> str:
    """Submits the form and waits for the video to play; returns its id."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    return generate(page)


def test_the_field_lists_the_adapters_and_is_hidden_where_the_server_takes_none(
    page: Page, adapters_server: RunningServer, ui_server: RunningServer
) -> None:
    tiny = ui_server.client.get("/v1/models/tiny", headers=AUTH).json()
    assert tiny["parameters"]["loras"]["max_items"] == 0  # a server without --adapters
    open_playground(page, ui_server)
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    expect(page.locator("#adapters-field")).to_be_hidden()
    expect(page.locator("#snippet-curl")).not_to_contain_text("loras")

    open_playground(page, adapters_server)
    field = page.get_by_label("Adapters", exact=True)
    expect(field).to_be_visible()
    listed = field.locator("option")
    expect(listed).to_have_text(["grain · coarse grain, distilled · recommends 2 steps, guidance 1, shift 4",
                                 "style · a test style"])
    assert listed.evaluate_all("os => os.map(o => o.value)") == ["grain", "style"]
    expect(page.locator("#adapters-hint")).to_have_text(
        "Up to 4, each with a scale from -4 to 4 (1: as trained; 0: off).")
    expect(page.locator("#chosen-adapters")).to_be_hidden()
    page.get_by_text("Use this request from code").click()
    expect(page.locator("#snippet-curl")).not_to_contain_text("loras")  # none chosen: none sent


def test_an_adapter_at_a_scale_runs_and_the_result_names_it(page: Page, adapters_server: RunningServer) -> None:
    open_playground(page, adapters_server)
    _choose(page, "style", "0.7")
    scale = page.get_by_label("Scale of style")
    for name, value in (("min", "-4"), ("max", "4"), ("step", "0.05")):
        expect(scale).to_have_attribute(name, value)
    page.get_by_label("Steps").fill(STEPS)
    video_id = _generate(page, "a paper boat with a style")

    video = video_of(adapters_server, video_id)
    assert video["status"] == "completed"
    assert video["loras"] == [{"name": "style", "sha256": _sha256(adapters_server)["style"], "scale": 0.7}]
    assert video["num_inference_steps"] == int(STEPS)
    expect(page.locator("#detail-loras")).to_have_text("style × 0.7")
    card = page.locator(f'#history > li[data-id="{video_id}"]')
    expect(card.locator(".card-meta")).to_contain_text("style × 0.7")
    screenshot(page, "playground-adapters")

    # Opened from the history, the video's adapters come back into the form at their scales.
    page.get_by_role("button", name="Remove adapter style").click()
    expect(page.locator("#chosen-adapters")).to_be_hidden()
    card.get_by_role("button", name=re.compile("^Show")).click()
    expect(page.get_by_label("Scale of style")).to_have_value("0.7")
    page.get_by_text("Use this request from code").click()
    expect(page.locator("#snippet-curl")).to_contain_text('"loras":[{"name":"style","scale":0.7}]')


def test_two_adapters_then_one_removed_and_a_recommendation_the_server_applies(
    page: Page, adapters_server: RunningServer
) -> None:
    open_playground(page, adapters_server)
    page.get_by_text("Use this request from code").click()
    _choose(page, "style", "0.5")
    _choose(page, "grain", "-1.25")
    expect(page.locator("#chosen-adapters > li")).to_have_count(2)
    # Both listed adapters are chosen: nothing is left to add.
    expect(page.get_by_role("button", name="Add adapter")).to_be_disabled()
    expect(page.get_by_label("Adapters", exact=True)).to_have_value("")
    curl = page.locator("#snippet-curl")
    expect(curl).to_contain_text('"loras":[{"name":"style","scale":0.5},{"name":"grain","scale":-1.25}]')
    # grain recommends 2 steps, guidance 1 and shift 4, and the user has set neither steps nor guidance (the
    # form has no shift): the request leaves them out.
    recommendation = page.locator("#adapters-recommendation")
    expect(recommendation).to_have_text("The server applies grain's recommended 2 steps, guidance 1 and shift 4, "
                                        "as you have not set steps or guidance.")
    expect(curl).not_to_contain_text("num_inference_steps")
    expect(curl).not_to_contain_text("guidance_scale")
    params = adapters_server.client.get("/v1/models/tiny", headers=AUTH).json()["parameters"]
    expect(page.get_by_label("Steps")).to_have_value(str(params["num_inference_steps"]["default"]))  # untouched

    page.get_by_role("button", name="Remove adapter style").click()
    expect(page.locator("#chosen-adapters > li")).to_have_count(1)
    expect(page.get_by_role("button", name="Add adapter")).to_be_enabled()
    expect(curl).to_contain_text('"loras":[{"name":"grain","scale":-1.25}]')
    video = video_of(adapters_server, _generate(page, "a paper boat in grain"))
    assert [(lora["name"], lora["scale"]) for lora in video["loras"]] == [("grain", -1.25)]
    # grain's, applied by the server, and shown.
    assert (video["num_inference_steps"], video["guidance_scale"], video["flow_shift"]) == (2, 1.0, 4.0)
    expect(page.locator("#detail-loras")).to_have_text("grain × -1.25")
    expect(page.locator("#detail-shift")).to_have_text("4")

    # Steps set by the user are the user's: sent, and the hint says which value wins.
    page.get_by_label("Steps").fill("3")
    expect(recommendation).to_have_text(
        "The server applies grain's recommended guidance 1 and shift 4, as you have not set guidance. "
        "Your steps (3) are sent, not grain's 2 steps.")
    expect(curl).to_contain_text('"num_inference_steps":3')
    expect(curl).not_to_contain_text("guidance_scale")

    # Every control of the field has a name.
    unnamed = page.locator("#adapters-field").evaluate(
        """f => [...f.querySelectorAll('input, select, button')]
            .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
            .map(e => e.outerHTML)""")
    assert unnamed == []


def test_the_servers_refusal_of_an_adapter_shows_at_the_field(page: Page, adapters_server: RunningServer) -> None:
    body = {"prompt": "too much style", "loras": [{"name": "style", "scale": 5}]}
    expected = adapters_server.client.post("/v1/videos", json=body, headers=AUTH).json()["error"]
    assert expected["param"] == "loras.0.scale"
    before = video_ids(adapters_server)

    open_playground(page, adapters_server)
    _choose(page, "style", "5")  # the input's max is 4; the form sends what it holds and the API says no
    page.get_by_label("Prompt", exact=True).fill("too much style")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#error-loras")
    expect(error).to_have_text(expected["message"])
    expect(error).to_have_attribute("role", "alert")
    expect(page.get_by_label("Scale of style")).to_have_attribute("aria-invalid", "true")
    assert video_ids(adapters_server) == before  # nothing was created

    # Fixed and sent again: the error and the mark go.
    page.get_by_label("Scale of style").fill("0.25")
    page.get_by_label("Steps").fill(STEPS)
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    expect(error).to_be_empty()
    expect(page.get_by_label("Scale of style")).not_to_have_attribute("aria-invalid", "true")


def test_the_snippets_send_the_chosen_adapters(page: Page, adapters_server: RunningServer, tmp_path: Path) -> None:
    open_playground(page, adapters_server)
    _choose(page, "style", "0.7")
    _choose(page, "grain")
    page.get_by_label("Steps").fill(STEPS)
    page.get_by_label("Guidance", exact=True).fill("4")
    page.get_by_label("Prompt", exact=True).fill("a paper boat from code")
    page.get_by_text("Use this request from code").click()
    curl = page.locator("#snippet-curl").text_content() or ""
    assert '"loras":[{"name":"style","scale":0.7},{"name":"grain","scale":1}]' in curl, curl
    # The SDK's videos.create sends a multipart form: there the list travels as JSON text.
    python = page.locator("#snippet-python").text_content() or ""
    assert """        "loras": '[{"name":"style","scale":0.7},{"name":"grain","scale":1}]',  # JSON text: a form field\n""" \
        in python, python
    # With a first frame (on a model that takes one), curl sends a form too, loras as a field of JSON text.
    # Run here without its file part (tiny takes no image), that form makes the same job.
    request = shlex.split(curl)[shlex.split(curl).index("-d") + 1]
    form = page.evaluate("""async ([json, origin, key]) => (await import('/static/snippets.js'))
        .curlSnippet(json, origin, key, 'first.png')""", [request, adapters_server.url, USER_KEY])
    assert """--form-string 'loras=[{"name":"style","scale":0.7},{"name":"grain","scale":1}]'""" in form, form
    form = form.replace("-F input_reference=@first.png \\\n", "")
    assert "input_reference" not in form

    sha = _sha256(adapters_server)
    expected = [{"name": "style", "sha256": sha["style"], "scale": 0.7},
                {"name": "grain", "sha256": sha["grain"], "scale": 1.0}]
    made = [json.loads(run_snippet(["bash", "-c", curl], tmp_path))["id"],
            run_snippet([sys.executable, "-c", python], tmp_path).split()[0],
            json.loads(run_snippet(["bash", "-c", form], tmp_path))["id"]]
    for video_id in made:
        video = final_video(adapters_server, video_id, key=USER_KEY)
        assert video["status"] == "completed", video
        assert video["loras"] == expected
        # The user's steps and guidance, not grain's recommendation.
        assert (video["num_inference_steps"], video["guidance_scale"]) == (int(STEPS), 4.0)


def test_phone_width_fits_the_chosen_adapters(phone_page: Page, adapters_server: RunningServer) -> None:
    page = phone_page
    open_playground(page, adapters_server)
    _choose(page, "grain", "-3.95")
    _choose(page, "style")
    expect(page.locator("#chosen-adapters > li")).to_have_count(2)
    expect(page.get_by_role("button", name="Remove adapter style")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    screenshot(page, "playground-adapters-phone")
