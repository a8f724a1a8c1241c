"""The runner against scripted servers (httpx.MockTransport): every kind of answer is recorded as what it
is, and a server that never answers neither slows the arrivals nor stretches the run."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx

from reelserve.loadgen import LoadConfig, LoadProgress, plan_requests, run_load

# The scripted server decides by prompt.
PROMPTS = ["queue", "full", "open", "doomed", "gone", "hit"]


class ScriptedServer:
    def __init__(self) -> None:
        self.ids = itertools.count()
        self.polls: dict[str, int] = {}
        self.prompt_of: dict[str, str] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/metrics":
            waiting = sum(1 for n in self.polls.values() if n < 2)
            return httpx.Response(
                200, text=f"# TYPE reelserve_queue_depth gauge\nreelserve_queue_depth {waiting}\n"
            )
        if request.method == "POST" and path == "/v1/videos":
            return self.create(json.loads(request.content))
        video_id = path.rsplit("/", 1)[-1]
        self.polls[video_id] += 1
        prompt = self.prompt_of[video_id]
        if prompt == "gone":
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such video"}})
        if self.polls[video_id] < 2:
            return httpx.Response(200, json=self.video(video_id, "in_progress"))
        if prompt == "doomed":
            error = {"code": "deadline_exceeded", "message": "too late"}
            return httpx.Response(200, json={**self.video(video_id, "failed"), "error": error})
        return httpx.Response(200, json=self.video(video_id, "completed", degraded=True))

    def create(self, body: dict[str, object]) -> httpx.Response:
        prompt = str(body["prompt"])
        if prompt == "full":
            error = {"code": "queue_full", "message": "full", "param": None}
            return httpx.Response(429, json={"error": error}, headers={"Retry-After": "2"})
        if prompt == "open":
            return httpx.Response(
                503, json={"error": {"code": "circuit_open", "message": "open", "param": None}}
            )
        video_id = f"video_{next(self.ids)}"
        if prompt == "hit":
            return httpx.Response(200, json={**self.video(video_id, "completed"), "cached": True})
        self.polls[video_id], self.prompt_of[video_id] = 0, prompt
        return httpx.Response(200, json=self.video(video_id, "queued"))

    @staticmethod
    def video(video_id: str, status: str, degraded: bool = False) -> dict[str, object]:
        done = status == "completed"
        return {
            "id": video_id,
            "object": "video",
            "status": status,
            "priority": "standard",
            "error": None,
            "cached": False,
            "created_at": 1000,
            "completed_at": 1001 if done else None,
            "deadline_at": 5000.0,
            "timings": {"queue_s": 0.25 if done else None, "total_s": 1.0 if done else None},
            "degraded": {"num_inference_steps": {"requested": 4, "ran": 2}} if degraded else None,
        }


async def test_every_kind_of_answer_is_recorded_as_what_it_is() -> None:
    config = LoadConfig(
        url="http://reelserve.test",
        rate=400.0,
        duration_s=1.0,
        max_requests=60,
        drain_timeout_s=10.0,
        prompts=PROMPTS,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        metrics_interval_s=0.01,
        tier_mix={"realtime": 1, "standard": 1},
    )
    server = ScriptedServer()
    report = await run_load(config, transport=httpx.MockTransport(server.handle))
    prompt_of = {p.index: p.body["prompt"] for p in plan_requests(config)}
    assert len(report.records) == report.planned == 60
    assert set(prompt_of.values()) == set(PROMPTS)
    for r in report.records:
        prompt = prompt_of[r.index]
        expected = {
            "queue": (200, None, "completed"),
            "hit": (200, None, "completed"),
            "doomed": (200, None, "failed"),
            "gone": (200, None, "lost"),
            "full": (429, "queue_full", None),
            "open": (503, "circuit_open", None),
        }[prompt]
        assert (r.http_status, r.error_code, r.final_status) == expected, (prompt, r)
        assert r.has_retry_after == (prompt == "full") and r.retry_after_s == (
            2.0 if prompt == "full" else None
        )
        assert r.cached == (prompt == "hit")
        assert r.deadline_missed == (prompt == "doomed")
        if r.final_status is not None:
            assert r.e2e_s is not None and r.e2e_s >= 0
    o = report.overall
    count = {p: sum(v == p for v in prompt_of.values()) for p in PROMPTS}
    assert o.sent == o.accepted + o.rejected and o.unfinished == 0
    assert o.completed == count["queue"] + count["hit"] and o.lost == count["gone"]
    assert o.failed == {"deadline_exceeded": count["doomed"]}
    assert o.rejections_without_retry_after == o.server_errors == count["open"]
    assert o.cache_hits == count["hit"] and o.degraded == count["queue"]
    assert o.queue_wait_s.p50 == 0.25
    assert report.queue_samples and all(s.total is not None for s in report.queue_samples)
    assert sum(t.sent for t in report.tiers.values()) == o.sent


async def test_a_server_that_never_answers_does_not_slow_arrivals_or_stretch_the_run() -> None:
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    progress: list[LoadProgress] = []
    config = LoadConfig(
        url="http://reelserve.test",
        rate=40.0,
        duration_s=1.0,
        max_requests=25,
        drain_timeout_s=0.5,
        request_timeout_s=60.0,
    )
    report = await run_load(config, on_progress=progress.append, transport=httpx.MockTransport(hang))
    planned = plan_requests(config)
    assert len(report.records) == len(planned) > 10
    # Every POST hung, yet each went out on time; the run ended at the drain deadline.
    assert all(r.sent_s - r.scheduled_s < 0.25 for r in report.records)
    assert report.wall_s < planned[-1].at_s + config.drain_timeout_s + 1.0
    assert report.overall.transport_errors == report.overall.sent and report.overall.accepted == 0
    assert {r.transport_error for r in report.records} == {"no answer before the drain deadline"}
    assert progress and progress[-1].sent == len(planned) and progress[-1].draining
