"""Tenants are walls, in both modes: every per-job route × {owner, other tenant, admin, no key}.

Another tenant's job answers exactly what an unknown id answers (status and body), so its existence
never leaks; and nothing the other tenant tried changed the job.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from support import ADMIN, ALICE, BOB, RunningServer, auth, gate_pipeline

BODY = {"prompt": "a red ball rolling", "seed": 11}
CALLERS = {"owner": ALICE, "other tenant": BOB, "admin": ADMIN, "no key": None}
# The routes that read: method, path template, and the status the owner gets.
READS: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", "/v1/videos/{id}", {}, 200),
    ("GET", "/v1/videos/{id}/content", {}, 200),
    ("GET", "/v1/videos/{id}/content?variant=thumbnail", {}, 200),
    ("GET", "/v1/videos/{id}/content", {"range": "bytes=0-9"}, 206),
    ("GET", "/v1/videos/{id}/events", {}, 200),
]
EXPECTED = {"owner": None, "other tenant": 404, "admin": None, "no key": 401}


def unknown_id_answer(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return client.request(method, path.format(id="video_" + "0" * 32), headers={**headers, **auth(BOB)})


def same_as_unknown(response: httpx.Response, unknown: httpx.Response, job_id: str) -> bool:
    body = response.json()
    body["error"]["message"] = body["error"]["message"].replace(job_id, "video_" + "0" * 32)
    return response.status_code == unknown.status_code == 404 and body == unknown.json()


def test_reads_answer_by_caller(keyed: RunningServer) -> None:
    c = keyed.client
    job = c.post("/v1/videos/sync", json=BODY, headers=auth(ALICE)).json()
    assert job["status"] == "completed", job
    for method, template, headers, owner_status in READS:
        path = template.format(id=job["id"])
        for who, key in CALLERS.items():
            response = c.request(method, path, headers={**headers, **auth(key)})
            expected = EXPECTED[who] or owner_status
            assert response.status_code == expected, (method, path, who, response.text[:200])
            if who == "other tenant":
                assert same_as_unknown(response, unknown_id_answer(c, method, template, headers), job["id"])
                assert "a red ball" not in response.text
            if who == "no key":
                assert response.json()["error"]["code"] == "unauthorized"


def test_cancel_and_delete_answer_by_caller(keyed: RunningServer) -> None:
    c = keyed.client
    gate = gate_pipeline(keyed)
    gate.hold()  # Alice's jobs stay unfinished while the others try
    try:
        jobs = {who: c.post("/v1/videos", json=BODY, headers=auth(ALICE)).json()["id"] for who in CALLERS}
        for action, request in _ACTIONS.items():
            for who, key in CALLERS.items():
                job_id = jobs[who]
                response = request(c, job_id, key)
                if who in ("owner", "admin"):
                    assert response.status_code == 200, (action, who, response.text)
                    assert response.json().get("status", "cancelled") == "cancelled" or action == "delete"
                else:
                    assert response.status_code == EXPECTED[who], (action, who, response.text)
                    still = c.get(f"/v1/videos/{job_id}", headers=auth(ALICE)).json()
                    assert still["status"] in ("queued", "in_progress"), (action, who, still)
                    if who == "other tenant":
                        assert same_as_unknown(response, unknown_id_answer(c, *_ROUTE[action], {}), job_id)
        # What the owner and the admin did took effect: the first action cancelled, the second deleted.
        for who in ("owner", "admin"):
            assert c.get(f"/v1/videos/{jobs[who]}", headers=auth(ALICE)).status_code == 404
    finally:
        gate.gate.set()


def _cancel(c: httpx.Client, job_id: str, key: str | None) -> httpx.Response:
    return c.post(f"/v1/videos/{job_id}/cancel", headers=auth(key))


def _delete(c: httpx.Client, job_id: str, key: str | None) -> httpx.Response:
    return c.delete(f"/v1/videos/{job_id}", headers=auth(key))


_ACTIONS: dict[str, Callable[[httpx.Client, str, str | None], httpx.Response]] = {
    "cancel": _cancel, "delete": _delete,
}
_ROUTE = {"cancel": ("POST", "/v1/videos/{id}/cancel"), "delete": ("DELETE", "/v1/videos/{id}")}


def test_listing_is_scoped_and_admin_sees_all(keyed: RunningServer) -> None:
    c = keyed.client
    alice = c.post("/v1/videos/sync", json=BODY, headers=auth(ALICE)).json()["id"]
    bob = c.post("/v1/videos/sync", json={**BODY, "seed": 12}, headers=auth(BOB)).json()["id"]

    def listed(key: str) -> set[str]:
        response = c.get("/v1/videos", params={"limit": 100}, headers=auth(key))
        assert response.status_code == 200
        return {video["id"] for video in response.json()["data"]}

    assert listed(ALICE) == {alice} and listed(BOB) == {bob} and listed(ADMIN) >= {alice, bob}
    other_cursor = c.get("/v1/videos", params={"after": alice}, headers=auth(BOB))
    assert other_cursor.status_code == 422 and other_cursor.json()["error"]["param"] == "after"


def test_with_auth_off_everyone_is_one_tenant(server: RunningServer) -> None:
    """Without API keys there is one tenant: every caller sees every job (and a stray bearer changes nothing)."""
    c = server.client
    job = c.post("/v1/videos/sync", json=BODY).json()
    assert c.get(f"/v1/videos/{job['id']}", headers=auth("whatever")).status_code == 200
    assert job["id"] in {v["id"] for v in c.get("/v1/videos").json()["data"]}


def test_every_per_job_route_in_the_openapi_document_is_walled(keyed: RunningServer) -> None:
    """Every route with a {video_id} (those added later too) answers another tenant exactly as it
    answers an unknown id, and the job is untouched."""
    c = keyed.client
    job = c.post("/v1/videos/sync", json=BODY, headers=auth(ALICE)).json()
    unknown = "video_" + "0" * 32
    routes = [(method.upper(), path) for path, item in c.get("/openapi.json").json()["paths"].items()
              if "{video_id}" in path for method in item]
    assert len(routes) >= 5, routes
    for method, path in routes:
        theirs = c.request(method, path.replace("{video_id}", job["id"]), headers=auth(BOB))
        nobody = c.request(method, path.replace("{video_id}", unknown), headers=auth(BOB))
        assert theirs.status_code == nobody.status_code == 404, (method, path, theirs.text)
        assert theirs.text.replace(job["id"], unknown) == nobody.text, (method, path)
    assert c.get(f"/v1/videos/{job['id']}", headers=auth(ALICE)).json()["status"] == "completed"
