"""What the browser tests share besides fixtures: the browser's path, the keys, screenshots."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from playwright.sync_api import Page, expect
from support import RunningServer

CHROMIUM = Path(os.environ.get("REELSERVE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("REELSERVE_TEST_ARTIFACTS", Path(__file__).parents[2] / "artifacts")) / "ui"
USER_KEY = "ui-user-key"
ADMIN_KEY = "ui-admin-key"
AUTH = {"Authorization": f"Bearer {USER_KEY}"}
# For waits on a job (a tiny one takes well under a second alone; leave room for a busy 2-core box).
JOB_MS = 20_000


def screenshot(page: Page, name: str) -> Path:
    """Saves a full-page screenshot as a test artifact and returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_playground(page: Page, server: RunningServer) -> None:
    """The playground with USER_KEY already in session storage, as after a key entry."""
    page.add_init_script(f"sessionStorage.setItem('reelserve.apiKey', {json.dumps(USER_KEY)})")
    page.goto(server.url)
    expect(page.locator("#app")).to_be_visible()


def wait_until_playing(page: Page) -> None:
    page.wait_for_function(
        "() => { const v = document.getElementById('result-video');"
        " return v.readyState >= 2 && v.duration > 0 && !document.getElementById('player').hidden; }"
    )


def generate(page: Page) -> str:
    """Clicks Generate and waits until the new video has completed and plays; returns its id.

    Until the POST returns, the result area still shows the previous video, "Completed" included, so
    the wait is for the previous id to leave first: after that, any "Completed" is the new job's."""
    shown = page.locator("#detail-id")
    previous = shown.text_content() if shown.count() else None
    page.get_by_role("button", name="Generate").click()
    if previous:
        expect(shown).not_to_have_text(previous, timeout=JOB_MS)
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_MS)
    wait_until_playing(page)
    return shown.text_content() or ""


def video_of(server: RunningServer, video_id: str) -> dict:
    """The video object, as the test user sees it."""
    response = server.client.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def video_ids(server: RunningServer) -> list[str]:
    return [v["id"] for v in server.client.get("/v1/videos", params={"limit": 100}, headers=AUTH).json()["data"]]


def run_snippet(command: list[str], cwd: Path) -> str:
    """A snippet run as pasted (its stdout); it must succeed."""
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.stdout
