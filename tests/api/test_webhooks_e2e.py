"""Webhooks from a real server (tiny model) to a real receiver on loopback: signed per Standard
Webhooks, retried after 5xx, kept on the job, and never aimed at a private address unless allowed."""

from __future__ import annotations

import json
from pathlib import Path

from standardwebhooks.webhooks import Webhook
from support import Receiver, RunningServer, serve, wait_until

from reelserve.webhooks import generate_secret

BODY = {"prompt": "a paper boat on a river", "size": "32x32", "num_frames": 5, "num_inference_steps": 2}
SECRET = generate_secret()


def webhook_state(running: RunningServer, video_id: str, status: str) -> dict:
    def reached() -> dict | None:
        video = running.client.get(f"/v1/videos/{video_id}").json()
        return video if (video["webhook"] or {}).get("status") == status else None

    return wait_until(reached, timeout=60)


def test_a_finished_job_posts_a_signed_video_object_and_retries_after_errors(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serve(tmp_path / "data", webhook_secret=SECRET, webhook_allow=["127.0.0.0/8"]) as running:
        created = running.client.post("/v1/videos", json={**BODY, "webhook_url": receiver.url})
        assert created.status_code == 200, created.text
        assert created.json()["webhook"]["status"] == "pending"
        video = webhook_state(running, created.json()["id"], "delivered")
        assert video["webhook"]["attempts"] == 1 and video["webhook"]["last_status_code"] == 200
        (request,) = receiver.requests
        payload = Webhook(SECRET).verify(request.body, request.headers)  # raises unless the signature holds
        assert payload["type"] == "video.completed" and payload["data"]["id"] == video["id"]
        assert payload["data"]["status"] == "completed"

        receiver.requests.clear()
        receiver.answer(500, 500)
        second = running.client.post("/v1/videos", json={**BODY, "seed": 9, "webhook_url": receiver.url}).json()
        retried = webhook_state(running, second["id"], "delivered")
        assert retried["webhook"]["attempts"] == 3
        assert len(receiver.requests) == 3
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one message, three attempts
        assert json.loads(receiver.requests[-1].body)["data"]["id"] == second["id"]


def test_unsafe_or_unsigned_webhooks_are_refused_and_nothing_is_stored(tmp_path: Path, receiver: Receiver) -> None:
    with serve(tmp_path / "data", webhook_secret=SECRET) as running:  # no allow-list: loopback is private
        for url in (receiver.url, "http://10.1.2.3/hook", "http://169.254.169.254/latest", "ftp://example.com/x"):
            refused = running.client.post("/v1/videos", json={**BODY, "webhook_url": url})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["param"] == "webhook_url"
        assert running.client.get("/v1/videos").json()["data"] == []
    assert receiver.requests == []
    with serve(tmp_path / "other", webhook_allow=["127.0.0.0/8"]) as running:  # no secret to sign with
        refused = running.client.post("/v1/videos", json={**BODY, "webhook_url": receiver.url})
        assert refused.status_code == 422 and "secret" in refused.json()["error"]["message"]


def test_a_remix_posts_its_own_signed_video_object(tmp_path: Path, receiver: Receiver) -> None:
    with serve(tmp_path / "data", webhook_secret=SECRET, webhook_allow=["127.0.0.0/8"]) as running:
        source = running.client.post("/v1/videos", json=BODY).json()
        wait_until(lambda: running.client.get(f"/v1/videos/{source['id']}").json()["status"] == "completed")
        remix = running.client.post(f"/v1/videos/{source['id']}/remix",
                                    json={"prompt": "a paper crane", "webhook_url": receiver.url}).json()
        video = webhook_state(running, remix["id"], "delivered")
        (request,) = receiver.requests
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert payload["data"]["id"] == video["id"] and payload["data"]["remixed_from_video_id"] == source["id"]
        refused = running.client.post(f"/v1/videos/{source['id']}/remix",
                                      json={"prompt": "x", "webhook_url": "http://10.1.2.3/hook"})
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "webhook_url"
