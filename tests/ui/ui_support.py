"""What the browser tests share besides fixtures: the browser's path, the keys, screenshots."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("REELSERVE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("REELSERVE_TEST_ARTIFACTS", Path(__file__).parents[2] / "artifacts")) / "ui"
USER_KEY = "ui-user-key"
ADMIN_KEY = "ui-admin-key"


def screenshot(page: Page, name: str) -> Path:
    """Saves a full-page screenshot as a test artifact and returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
