"""Image to video and remix in the playground, in Chromium against the embedded server with the micro
model (it takes a first frame; tiny does not): a chosen image is shown as the first frame and sent as
``input_reference``, an image of another size is fitted only as the user chooses, a completed video is
remixed from the result box, and the snippets say how to do each from code.

Every wait is on the page (``expect``, ``wait_for_function``) or on the API; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect
from support import GatedFamily, RunningServer, final_video, gate_pipeline, serve, wait_until
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
    wait_until_playing,
)

from reelserve.inputs.images import Fit, read_reference

STEPS = "4"  # the micro model's few steps: each job here takes well under a second
PROMPT = "a red circle moving right"


@pytest.fixture(scope="module")
def micro_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The micro model behind a gate that stays open unless a test holds it."""
    with serve(tmp_path_factory.mktemp("inputs") / "data", model="micro", api_keys=[USER_KEY]) as running:
        gate_pipeline(running)
        yield running


def _image(path: Path, width: int, height: int) -> Path:
    """A red circle on a dark ground, as the micro world draws one; saved in the format of the suffix."""
    image = Image.new("RGB", (width, height), (40, 40, 48))
    ImageDraw.Draw(image).ellipse((8, 22, 28, 42), fill=(220, 40, 40))
    image.save(path)
    return path





def _generate(page: Page, prompt: str = PROMPT) -> str:
    """Submits the form and waits for the video to play; returns its id."""
    page.get_by_label("Steps").fill(STEPS)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    return generate(page)


def test_no_image_field_for_a_model_without_image_input(page: Page, ui_server: RunningServer) -> None:
    models = ui_server.client.get("/v1/models", headers=AUTH).json()["data"]
    assert "image" not in models[0]["inputs"]  # tiny: text only
    open_playground(page, ui_server)
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    expect(page.locator("#image-field")).to_be_hidden()
    expect(page.locator("#fit-field")).to_be_hidden()


def test_an_image_of_the_videos_size_becomes_its_first_frame(
    page: Page, micro_server: RunningServer, tmp_path: Path
) -> None:
    first = _image(tmp_path / "first.png", 64, 64)
    digest = read_reference(first.read_bytes(), 64, 64, None).digest  # what the server makes of these pixels
    open_playground(page, micro_server)
    page.get_by_label("Start from an image").set_input_files(first)
    thumbnail = page.get_by_role("img", name="First frame", exact=True)
    expect(thumbnail).to_be_visible()
    expect(thumbnail).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.locator("#first-frame-caption")).to_have_text("First frame · 64x64")
    expect(page.get_by_label("Fit the image to the video")).to_be_hidden()  # same size: nothing to fit

    # The snippets upload the file, as the openai SDK does; run from beside it, they send these pixels.
    page.get_by_label("Steps").fill(STEPS)
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_text("Use this request from code").click()
    curl = page.locator("#snippet-curl").text_content() or ""
    assert "-F input_reference=@first.png" in curl and f"--form-string 'prompt={PROMPT}'" in curl, curl
    assert "data:" not in curl and "input_fit" not in curl
    python = page.locator("#snippet-python").text_content() or ""
    assert 'input_reference=open("first.png", "rb"),' in python, python
    made = [json.loads(run_snippet(["bash", "-c", curl], tmp_path))["id"],
            run_snippet([sys.executable, "-c", python], tmp_path).split()[0]]
    for video_id in made:
        video = final_video(micro_server, video_id, key=USER_KEY)
        assert video["status"] == "completed" and video["input_reference"] == digest, video
        assert video["num_inference_steps"] == int(STEPS) and video["size"] == "64x64"

    video = video_of(micro_server, generate(page))
    assert video["input_reference"].startswith("sha256:") and video["input_reference"] == digest
    assert video["input_fit"] is None and video["status"] == "completed"
    expect(page.locator("#detail-source")).to_have_text("from an image")

    # Removed: the next request is text only again, and so are its snippets.
    page.get_by_role("button", name="Remove image").click()
    expect(thumbnail).to_be_hidden()
    expect(page.locator("#snippet-curl")).to_contain_text("-H 'Content-Type: application/json'")
    expect(page.locator("#snippet-curl")).not_to_contain_text("input_reference")
    expect(page.locator("#snippet-python")).not_to_contain_text("input_reference")
    text_only = video_of(micro_server, _generate(page, "a blue square moving left"))
    assert text_only["input_reference"] is None
    expect(page.locator("#detail-source")).to_have_count(0)


def test_an_image_of_another_size_is_fitted_as_the_user_chooses(
    page: Page, micro_server: RunningServer, tmp_path: Path
) -> None:
    wide = _image(tmp_path / "wide.png", 96, 64)
    open_playground(page, micro_server)
    page.get_by_label("Start from an image").set_input_files(wide)
    expect(page.locator("#first-frame-caption")).to_have_text("First frame · 96x64")
    fit = page.get_by_label("Fit the image to the video")
    expect(fit).to_be_visible()
    expect(fit).to_have_value("crop")  # the default; never a silent resize
    expect(page.locator("#fit-hint")).to_have_text("The image is 96x64 and the video 64x64.")
    page.get_by_text("Use this request from code").click()
    expect(page.locator("#snippet-curl")).to_contain_text("--form-string 'input_fit=crop'")

    fit.select_option("pad")
    expect(page.locator("#snippet-python")).to_contain_text('"input_fit": "pad",')
    expect(page.locator("#snippet-curl")).to_contain_text("-F input_reference=@wide.png")
    video = video_of(micro_server, _generate(page))
    assert video["input_fit"] == "pad"
    assert video["input_reference"] == read_reference(wide.read_bytes(), 64, 64, Fit.pad).digest
    expect(page.locator("#detail-source")).to_have_text("from an image (fitted: pad)")
    screenshot(page, "playground-image")


def test_the_servers_refusal_of_an_image_shows_by_the_field(
    page: Page, micro_server: RunningServer, tmp_path: Path
) -> None:
    gif = _image(tmp_path / "first.gif", 64, 64)  # the browser draws a GIF; the API takes PNG, JPEG, WebP
    url = "data:image/gif;base64," + base64.b64encode(gif.read_bytes()).decode()
    expected = micro_server.client.post(
        "/v1/videos", json={"prompt": PROMPT, "input_reference": url}, headers=AUTH
    ).json()["error"]
    assert expected["param"] == "input_reference"
    before = video_ids(micro_server)

    open_playground(page, micro_server)
    page.get_by_label("Start from an image").set_input_files(gif)
    expect(page.get_by_role("img", name="First frame", exact=True)).to_be_visible()
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#error-input_reference")
    expect(error).to_have_text(expected["message"])
    expect(error).to_have_attribute("role", "alert")
    expect(page.get_by_label("Start from an image")).to_have_attribute("aria-invalid", "true")
    assert video_ids(micro_server) == before  # nothing was created


def test_remix_a_completed_video_from_the_result_box(page: Page, micro_server: RunningServer, tmp_path: Path) -> None:
    open_playground(page, micro_server)
    remix = page.get_by_role("form", name="Remix")
    expect(remix).to_be_hidden()  # nothing to remix yet
    first_id = _generate(page)

    expect(remix).to_be_visible()
    prompt, strength = page.get_by_label("Remix prompt"), page.get_by_label("Strength", exact=True)
    expect(prompt).to_have_value(PROMPT)  # the video's own prompt, to change
    expect(strength).to_have_value("0.5")
    expect(strength).to_have_attribute("min", "0.05")
    expect(strength).to_have_attribute("step", "0.05")
    expect(page.locator("#remix-strength-value")).to_have_text("0.5")
    strength.fill("0.75")
    expect(page.locator("#remix-strength-value")).to_have_text("0.75")
    prompt.fill("a yellow circle moving right")

    page.get_by_text("Remix from code").click()
    curl = page.locator("#snippet-remix-curl").text_content() or ""
    assert curl.startswith(f"curl -sS '{micro_server.url}/v1/videos/{first_id}/remix'"), curl
    assert '"strength":0.75' in curl and '"prompt":"a yellow circle moving right"' in curl
    python = page.locator("#snippet-remix-python").text_content() or ""
    assert f'client.videos.remix(\n    "{first_id}",\n    prompt="a yellow circle moving right",' in python, python
    assert 'extra_body={\n        "strength": 0.75,' in python

    # Held at its start, the remix is shown live, as a new generation is, and followed over SSE.
    gate = micro_server.worker.engine.runner.runners[0].family
    assert isinstance(gate, GatedFamily)
    gate.hold()
    try:
        page.get_by_role("button", name="Remix", exact=True).click()
        assert gate.entered.wait(JOB_MS / 1000)
        wait_until(lambda: micro_server.server.engine.bus.listening_jobs())
        expect(page.locator("#job-live")).to_be_visible()
        expect(page.locator("#cancel")).to_be_enabled()
        expect(remix).to_be_hidden()  # a running job is no remix source
    finally:
        gate.gate.set()
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    wait_until_playing(page)
    remixed_id = page.locator("#detail-id").text_content() or ""
    video = video_of(micro_server, remixed_id)
    assert remixed_id != first_id and video["status"] == "completed"
    assert video["remixed_from_video_id"] == first_id and video["strength"] == 0.75
    assert video["prompt"] == "a yellow circle moving right"
    expect(page.locator("#detail-source")).to_have_text(f"remix of {first_id} at strength 0.75")
    expect(page.locator(f'#history > li[data-id="{remixed_id}"]')).to_be_visible()
    # The remix is completed in turn: it can be remixed, from its own prompt.
    expect(remix).to_be_visible()
    expect(prompt).to_have_value("a yellow circle moving right")
    screenshot(page, "playground-remix")

    # The snippets remix the first video too.
    made = [json.loads(run_snippet(["bash", "-c", curl], tmp_path))["id"], run_snippet([sys.executable, "-c", python], tmp_path).split()[0]]
    for made_id in made:
        video = final_video(micro_server, made_id, key=USER_KEY)
        assert video["status"] == "completed", video
        assert video["remixed_from_video_id"] == first_id and video["strength"] == 0.75
