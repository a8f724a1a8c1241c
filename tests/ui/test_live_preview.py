"""The playground's live preview, in Chromium against the embedded server with the micro model (its
x0 estimates change visibly from step to step; the tiny model's random VAE draws near-grey frames):
the result box shows previews from the SSE stream while the video runs, then the video, and the
details say when the first preview came."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from support import StepRecorder, serve, wait_until
from ui_support import AUTH, JOB_MS, USER_KEY, open_playground, wait_until_playing


def test_the_result_box_shows_live_previews_before_the_video(page: Page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with serve(tmp_path / "data", model="micro", api_keys=[USER_KEY]) as running:
        open_playground(page, running)
        expect(page.get_by_label("Live preview")).to_be_checked()
        # What the result box shows, in order: each preview's image, and the video once it is given.
        page.evaluate(
            """() => {
                window.shown = [];
                const preview = document.getElementById('result-preview');
                const video = document.getElementById('result-video');
                new MutationObserver(() => { if (preview.src) window.shown.push(['preview', preview.src]); })
                    .observe(preview, { attributes: true, attributeFilter: ['src'] });
                new MutationObserver(() => { if (video.src) window.shown.push(['video', video.src]); })
                    .observe(video, { attributes: true, attributeFilter: ['src'] });
            }"""
        )
        # Held before its second step until the page follows the job: the micro model's 30 steps
        # take about a second, which could end before the page subscribes.
        lanes = running.worker.engine.runner
        assert lanes is not None
        held = StepRecorder(lanes.runners[0].family, hold_at=2)
        lanes.runners[0].family = held
        try:
            page.get_by_label("Steps").fill("30")  # a preview every 6 steps: at 6, 12, 18 and 24
            page.get_by_label("Prompt", exact=True).fill("a red circle moving right")
            page.get_by_role("button", name="Generate").click()
            assert held.held.wait(JOB_MS / 1000)
            wait_until(lambda: running.server.engine.bus.listening_jobs())
        finally:
            held.gate.set()
            lanes.runners[0].family = held.real

        wait_until_playing(page)
        expect(page.locator("#result-preview")).to_be_hidden()  # the video took its place
        shown = page.evaluate("window.shown")
        kinds = [kind for kind, _ in shown]
        assert "video" in kinds, kinds
        before_video = [src for kind, src in shown[: kinds.index("video")] if kind == "preview"]
        assert all(src.startswith("data:image/webp;base64,") for src in before_video)
        assert len(set(before_video)) >= 2, f"{len(before_video)} previews, {len(set(before_video))} distinct"

        video_id = page.locator("#detail-id").text_content()
        timings = running.client.get(f"/v1/videos/{video_id}", headers=AUTH).json()["timings"]
        assert 0 < timings["first_preview_s"] < timings["total_s"]
        expect(page.locator("#detail-timings")).to_have_text(re.compile(r"first preview \d+\.\d+ s$"))
