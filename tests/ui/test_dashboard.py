"""The operator dashboard at ``/admin`` in a real browser against the real embedded server.

Jobs are made through the API; what the page draws is compared with the API's own
``/v1/admin/stats`` answer. No request is mocked; waits are Playwright's expectations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from support import RunningServer, serve, wait_until
from ui_support import ADMIN_KEY, USER_KEY, screenshot

USER = {"Authorization": f"Bearer {USER_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SMALL = {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2}
# Five minutes in ten-second points: each point is exactly one of the server's stats buckets, so the
# page's points and the API's line up by their start time whenever each was fetched.
WINDOW, STEP = 300, 10


def api_stats(server: RunningServer) -> dict[str, Any]:
    response = server.client.get("/v1/admin/stats", params={"window": WINDOW, "step": STEP}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def sync_job(server: RunningServer, prompt: str, seed: int) -> dict[str, Any]:
    response = server.client.post("/v1/videos/sync", json={"prompt": prompt, "seed": seed, **SMALL}, headers=USER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed", body
    return body


@pytest.fixture(scope="module")
def traffic(ui_server: RunningServer) -> dict[str, Any]:
    """Finished jobs for the dashboard to show: distinct prompts, one cache hit, a concurrent burst.
    Returns the API's stats once every job is counted."""
    for seed, prompt in enumerate(["a red ball", "a blue cube", "a green cone"], start=1):
        assert not sync_job(ui_server, prompt, seed)["cached"]
    assert sync_job(ui_server, "a red ball", 1)["cached"], "the same prompt and seed must be a cache hit"

    def submit(i: int) -> str:
        body = {"prompt": f"a paper lantern {i}", "seed": 100 + i, **SMALL}
        response = ui_server.client.post("/v1/videos", json=body, headers=USER)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(4) as pool:  # at once, so the scheduler may batch some of them
        ids = list(pool.map(submit, range(4)))

    def finished() -> bool:
        statuses = [ui_server.client.get(f"/v1/videos/{i}", headers=USER).json()["status"] for i in ids]
        assert "failed" not in statuses and "cancelled" not in statuses, statuses
        return all(status == "completed" for status in statuses)

    wait_until(finished, timeout=60, interval=0.05)
    return wait_until(lambda: (s := api_stats(ui_server))["totals"]["completed"] == 8 and s, timeout=10)


def sign_in(page: Page, server: RunningServer, query: str = "") -> None:
    page.goto(f"{server.url}/admin{query}")
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Show dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible()


def points(page: Page, chart: str, series: str | None = None) -> list[tuple[int, float]]:
    """(interval start, value) of every point drawn in a line chart."""
    selector = f'svg[data-chart="{chart}"] circle[data-value]'
    if series:
        selector = f'svg[data-chart="{chart}"] circle[data-series="{series}"]'
    return page.eval_on_selector_all(
        selector, "els => els.map(e => [Number(e.dataset.t), Number(e.dataset.value)])"
    )


def bars(page: Page, chart: str) -> dict[str, float]:
    return dict(
        page.eval_on_selector_all(
            f'svg[data-chart="{chart}"] rect[data-value]', "els => els.map(e => [e.dataset.label, Number(e.dataset.value)])"
        )
    )


def test_asks_for_the_admin_key_and_refuses_a_wrong_one(page: Page, ui_server: RunningServer) -> None:
    page.goto(f"{ui_server.url}/admin")
    key = page.get_by_label("Admin key")
    expect(key).to_be_visible()
    expect(key).to_have_attribute("type", "password")
    expect(page.locator("#dashboard")).to_be_hidden()

    key.fill("not-the-admin-key")
    page.get_by_role("button", name="Show dashboard").click()
    expect(page.locator("#key-error")).to_have_text("invalid API key")  # the API's own message
    expect(key).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    # a user key is not an admin key
    key.fill(USER_KEY)
    page.get_by_role("button", name="Show dashboard").click()
    expect(page.locator("#key-error")).to_have_text("invalid API key")

    key.fill(ADMIN_KEY)
    page.get_by_role("button", name="Show dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(key).to_be_hidden()
    expect(page.locator("#model-id")).to_have_text("tiny")
    assert page.evaluate("sessionStorage.getItem('reelserve.adminKey')") == ADMIN_KEY
    page.reload()  # kept for the tab: no second prompt
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.get_by_label("Admin key")).to_be_hidden()


def test_charts_show_the_same_numbers_as_the_api(page: Page, ui_server: RunningServer, traffic: dict) -> None:
    sign_in(page, ui_server, f"?window={WINDOW}")
    expect(page.get_by_label("Window")).to_have_value(str(WINDOW))
    stats = api_stats(ui_server)
    totals = stats["totals"]  # nothing is running now: the page's next answer has the same numbers

    expect(page.locator("#total-completed")).to_have_text(str(totals["completed"]))
    expect(page.locator("#total-failed")).to_have_text(str(totals["failed"]))
    expect(page.locator("#total-cancelled")).to_have_text(str(totals["cancelled"]))
    expect(page.locator("#cache-cached")).to_have_text(str(totals["cached"]))

    rate = page.locator("#cache-hit-rate")
    assert totals["cache_hit_rate"] > 0
    assert float(rate.get_attribute("data-value")) == pytest.approx(totals["cache_hit_rate"])
    shown = re.fullmatch(r"(\d+(?:\.\d)?)%", rate.inner_text())
    assert shown, rate.inner_text()
    assert float(shown[1]) == pytest.approx(totals["cache_hit_rate"] * 100, abs=0.051)

    expect(page.locator("#model-ready")).to_have_text("yes")
    expect(page.locator('#workers tr[data-worker="embedded"]')).to_contain_text("embedded")
    assert stats["model"] == {"id": "tiny", "ready": True, "accelerations": ["cfg_batching", "shared_time_embedding", "channels_last", "fused_ffn"]}

    by_t = {point["t"]: point for point in stats["series"]}
    throughput = points(page, "throughput")
    assert len(throughput) == WINDOW // STEP
    assert any(value > 0 for _, value in throughput)
    assert sum(value for _, value in throughput) * STEP / 60 == pytest.approx(totals["completed"])
    for t, value in throughput:
        if t in by_t:
            assert value == pytest.approx(by_t[t]["completed"] * 60 / STEP), t

    for series in ("p50", "p95"):
        drawn = points(page, "latency", series)
        assert drawn and all(value > 0 for _, value in drawn), series
        api = {p["t"]: p[f"{series}_s"] for p in stats["series"] if p[f"{series}_s"] is not None}
        assert {t: pytest.approx(v) for t, v in drawn} == api, f"{series}: nulls are gaps, values as the API's"
    assert max(v for _, v in points(page, "latency", "p95")) <= totals["p95_s"] + 1e-9

    assert stats["batch_sizes"] and all(b["size"] >= 1 for b in stats["batch_sizes"])
    assert bars(page, "batch-sizes") == {str(b["size"]): b["count"] for b in stats["batch_sizes"]}
    assert max(bars(page, "batch-sizes").values()) > 0
    assert bars(page, "queue") == {"realtime": 0, "standard": 0, "batch": 0}
    expect(page.locator("#queue-total")).to_have_text("0")
    for chart in ("throughput", "latency", "batch-sizes", "queue"):
        svg = page.locator(f'svg[data-chart="{chart}"]')
        assert svg.get_attribute("aria-label"), chart
        assert svg.locator("title").first.text_content(), chart
    expect(page.locator("#last-updated")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    screenshot(page, "dashboard")

    # another window: asked for at once, with its own step
    page.get_by_label("Window").select_option(label="1 h")
    expect(page.locator("#totals-window")).to_have_text("last 1 h")
    expect(page.locator('svg[data-chart="throughput"] circle[data-value]')).to_have_count(30)
    expect(page.locator("#total-completed")).to_have_text(str(totals["completed"]))


def test_refreshes_live(page: Page, ui_server: RunningServer, traffic: dict) -> None:
    sign_in(page, ui_server, "?refresh=1")
    expect(page.locator("#refresh-every")).to_contain_text("every 1 s")
    before = api_stats(ui_server)["totals"]["completed"]
    expect(page.locator("#total-completed")).to_have_text(str(before))
    stamp = page.locator("#last-updated").get_attribute("datetime")

    sync_job(ui_server, "a live refresh", 4242)
    assert api_stats(ui_server)["totals"]["completed"] == before + 1
    expect(page.locator("#total-completed")).to_have_text(str(before + 1), timeout=10_000)
    assert page.locator("#last-updated").get_attribute("datetime") != stamp
    expect(page.locator("#refresh-error")).to_be_hidden()


def test_readable_on_a_phone(phone_page: Page, ui_server: RunningServer, traffic: dict) -> None:
    page = phone_page
    page.goto(f"{ui_server.url}/admin")
    expect(page.get_by_label("Admin key")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    sign_in(page, ui_server)
    expect(page.locator('svg[data-chart="latency"] circle[data-series="p95"]').first).to_be_attached()
    expect(page.locator("#model-ready")).to_have_text("yes")

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                               && !(el.tagName === 'BUTTON' && el.textContent.trim()))
                 .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    expect(page.get_by_label("Window")).to_be_visible()
    for chart in ("throughput", "latency", "batch-sizes", "queue"):  # drawn to the phone's width
        box = page.locator(f'svg[data-chart="{chart}"]').bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (chart, box)
    screenshot(page, "dashboard-phone")


@pytest.fixture
def no_admin_server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(tmp_path / "data", api_keys=[USER_KEY], warmup_runs=0) as running:
        yield running


def test_says_when_the_admin_api_is_disabled(page: Page, no_admin_server: RunningServer) -> None:
    page.goto(f"{no_admin_server.url}/admin")
    page.get_by_label("Admin key").fill("any-key")
    page.get_by_role("button", name="Show dashboard").click()
    expect(page.locator("#forbidden")).to_contain_text("admin API disabled")
    expect(page.locator("#dashboard")).to_be_hidden()
    expect(page.get_by_label("Admin key")).to_be_hidden()
