"""The playground's history: thumbnails, paging, opening a card (and reusing its request), deleting
with a confirmation, and the heading when the server has no API keys."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect
from support import RunningServer, serve
from ui_support import AUTH, open_playground, wait_until_playing


def test_history_shows_thumbnails_pages_opens_and_deletes(page: Page, ui_server: RunningServer) -> None:
    # Nine jobs: one real run, then eight cache hits of it (each its own job, completed at once).
    body = {"prompt": f"history {uuid.uuid4().hex[:6]}", "seed": 7}
    first = ui_server.client.post("/v1/videos", params={"wait": 30}, json=body, headers=AUTH).json()
    assert first["status"] == "completed"
    for _ in range(8):
        assert ui_server.client.post("/v1/videos", json=body, headers=AUTH).json()["cached"] is True
    newest = ui_server.client.get("/v1/videos", params={"limit": 8}, headers=AUTH).json()
    second_page = ui_server.client.get(
        "/v1/videos", params={"limit": 8, "after": newest["last_id"]}, headers=AUTH
    ).json()

    open_playground(page, ui_server)
    cards = page.locator("#history > li")
    expect(cards).to_have_count(8)
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == [v["id"] for v in newest["data"]]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history img')].filter(i => i.complete && i.naturalWidth > 0).length"
        " === 8"
    )

    # Paging: Next shows the following page, Previous comes back.
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    page.get_by_role("button", name="Next").click()
    expect(cards.first).to_have_attribute("data-id", second_page["data"][0]["id"])
    expect(page.get_by_role("button", name="Previous")).to_be_enabled()
    page.get_by_role("button", name="Previous").click()
    expect(cards.first).to_have_attribute("data-id", newest["data"][0]["id"])

    # Clicking a card shows that job, with its prompt and time, and puts its request in the form.
    expect(page.get_by_role("heading", name="Your videos")).to_be_visible()
    page.get_by_label("Prompt", exact=True).fill("something else")
    page.get_by_label("Seed").fill("123")
    shown = newest["data"][2]["id"]
    page.locator(f'#history > li[data-id="{shown}"]').get_by_role("button", name=re.compile("^Show")).click()
    expect(page.locator("#detail-id")).to_have_text(shown)
    expect(page.locator("#detail-prompt")).to_have_text(body["prompt"])
    expect(page.locator("#detail-created")).not_to_be_empty()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(body["prompt"])
    expect(page.get_by_label("Seed")).to_have_value("7")
    expect(page.get_by_label("Frames")).to_have_value(str(newest["data"][2]["num_frames"]))
    wait_until_playing(page)

    # Delete the newest from its card: gone from the list and from the API.
    # Delete asks first: dismissed, nothing happens; accepted, the card goes.
    doomed = newest["data"][0]["id"]
    delete = page.locator(f'#history > li[data-id="{doomed}"]').get_by_role("button", name=re.compile("^Delete"))
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    delete.click()
    expect(page.locator(f'#history > li[data-id="{doomed}"]')).to_have_count(1)
    assert asked and body["prompt"] in asked[0]
    assert ui_server.client.get(f"/v1/videos/{doomed}", headers=AUTH).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(page.locator(f'#history > li[data-id="{doomed}"]')).to_have_count(0)
    expect(cards).to_have_count(8)  # the next one moved up
    assert ui_server.client.get(f"/v1/videos/{doomed}", headers=AUTH).status_code == 404


def test_without_api_keys_the_history_says_it_is_everyones(page: Page, tmp_path: Path) -> None:
    with serve(tmp_path / "data") as open_server:
        open_server.client.post("/v1/videos", params={"wait": 30}, json={"prompt": "someone else's"})
        page.goto(open_server.url)
        expect(page.get_by_role("heading", name="All videos on this server")).to_be_visible()
        expect(page.locator("#history > li")).to_have_count(1)
