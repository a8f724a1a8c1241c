"""``/docs`` renders the API's operations with the network cut off: Swagger UI comes from files in the
package, not from a CDN."""

from __future__ import annotations

from playwright.sync_api import Page, Route
from support import RunningServer


def test_docs_render_offline(page: Page, ui_server: RunningServer) -> None:
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if url.startswith(ui_server.url):
            route.continue_()
        else:  # the network is "down": nothing but this server answers
            outside.append(url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(ui_server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    documented = sum(len(item) for item in ui_server.client.get("/openapi.json").json()["paths"].values())
    assert operations == documented >= 18
    assert page.locator(".opblock-summary-path", has_text="/v1/videos/{video_id}/content").count() == 1
    assert outside == []



def test_no_redoc(ui_server: RunningServer) -> None:
    """ReDoc's bundle fetches its logo from its CDN even when served locally, so it is not offered."""
    assert ui_server.client.get("/redoc").status_code == 404
