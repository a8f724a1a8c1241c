"""The result cache end to end: real servers over loopback HTTP, a real redis-server, SQLite, MP4s decoded
by PyAV. Each test starts its own server (tiny model, no warm-up) against the test's private Redis."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from support import RedisServer, RunningServer, serve, wait_until

from reelserve.cache.redis_tier import DEFAULT_PREFIX

BODY: dict[str, Any] = {"prompt": "A paper boat on a river.", "size": "32x32", "num_frames": 5,
                        "num_inference_steps": 2, "seed": 11}


@contextmanager
def cache_server(tmp_path: Path, redis: RedisServer | None, **overrides: object) -> Iterator[RunningServer]:
    settings: dict[str, object] = {"warmup_runs": 0, **overrides}
    if redis is not None:
        settings["redis_url"] = redis.url
    with serve(tmp_path / "data", **settings) as running:
        yield running


def sync(running: RunningServer, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = running.client.post("/v1/videos/sync", json=body, headers=headers)
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["status"] == "completed", video
    return video


def frames(running: RunningServer, video_id: str, key: str | None = None) -> np.ndarray:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = running.client.get(f"/v1/videos/{video_id}/content", headers=headers)
    assert response.status_code == 200, response.text
    with av.open(io.BytesIO(response.content)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def metric(running: RunningServer, name: str, **labels: str) -> float:
    value = running.server.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def cache_requests(running: RunningServer, level: str, result: str) -> float:
    return metric(running, "reelserve_cache_requests_total", level=level, result=result)


def redis_names(redis: RedisServer) -> list[str]:
    with redis.client() as client:
        return sorted(name.decode() for name in client.scan_iter(match=f"{DEFAULT_PREFIX}*"))


def stored_cache_key(running: RunningServer, video_id: str) -> str:
    job = running.server.engine.store.get(video_id)
    assert job is not None and job.cache_key is not None
    return job.cache_key


def test_a_repeat_is_its_own_completed_copy_and_outlives_its_source(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with cache_server(tmp_path, redis_server) as running:
        first = sync(running, BODY)
        assert first["cached"] is False and first["cache_source_id"] is None
        assert "cache_similarity" not in first and "cache_key" not in first and "sensitive" not in first

        # Another wording of the same prompt: normalised, it is the same key. No wait: a hit is final at once.
        second = running.client.post("/v1/videos", json={**BODY, "prompt": "a paper   boat on a RIVER"}).json()
        assert (second["status"], second["progress"], second["cached"]) == ("completed", 100, True)
        assert second["cache_source_id"] == first["id"] and second["id"] != first["id"]
        assert second["prompt"] == "a paper   boat on a RIVER" and second["seed"] == 11
        assert running.server.store.transitions(second["id"]) == [(None, "completed")]
        original = frames(running, first["id"])
        np.testing.assert_array_equal(frames(running, second["id"]), original)
        thumbs = [running.client.get(f"/v1/videos/{v['id']}/content", params={"variant": "thumbnail"}).content
                  for v in (first, second)]
        assert thumbs[0] == thumbs[1] and thumbs[0][:2] == b"\xff\xd8"

        listed = {v["id"]: v for v in running.client.get("/v1/videos").json()["data"]}
        assert listed[second["id"]]["cached"] is True and listed[first["id"]]["cached"] is False
        assert cache_requests(running, "l1", "hit") == 1
        assert metric(running, "reelserve_jobs_finished_total", status="completed") == 2

        # Without a seed each request draws its own, so it is a different video: a miss by design.
        unseeded = {k: v for k, v in BODY.items() if k != "seed"}
        assert sync(running, unseeded)["cached"] is False
        assert sync(running, unseeded)["cached"] is False

        # cache.enabled=false neither reads (BODY is cached) nor writes (its own prompt is not stored).
        assert sync(running, {**BODY, "cache": {"enabled": False}})["cached"] is False
        private = {**BODY, "prompt": "a lantern in fog", "cache": {"enabled": False}}
        sync(running, private)
        assert sync(running, {k: v for k, v in private.items() if k != "cache"})["cached"] is False

        # Deleting the source leaves the copy whole, and the next identical request runs again.
        assert running.client.delete(f"/v1/videos/{first['id']}").status_code == 200
        np.testing.assert_array_equal(frames(running, second["id"]), original)
        again = sync(running, BODY)
        assert again["cached"] is False and again["id"] not in (first["id"], second["id"])
        np.testing.assert_array_equal(frames(running, again["id"]), original)  # same seed, same video
        assert sync(running, BODY)["cache_source_id"] == again["id"]


def test_an_entry_whose_files_vanished_is_a_miss_and_is_dropped(tmp_path: Path, redis_server: RedisServer) -> None:
    with cache_server(tmp_path, redis_server) as running:
        first = sync(running, BODY)
        key = stored_cache_key(running, first["id"])
        running.server.engine.storage.delete_prefix(f"videos/{first['id']}/")  # e.g. removed by hand
        replay = sync(running, BODY)
        assert replay["cached"] is False
        # Its own completion stored the key again, now pointing at the new job.
        with redis_server.client() as client:
            assert client.hget(f"{DEFAULT_PREFIX}entry:{key}", "job_id") == replay["id"].encode()


def test_a_hit_restarts_the_entry_ttl_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    with cache_server(tmp_path, redis_server, cache_ttl_s=120) as running:
        first = sync(running, BODY)
        name = f"{DEFAULT_PREFIX}entry:{stored_cache_key(running, first['id'])}"
        with redis_server.client() as client:
            assert 110 < client.ttl(name) <= 120
            client.expire(name, 5)
            assert sync(running, BODY)["cached"] is True
            wait_until(lambda: client.ttl(name) > 100, timeout=10)


def test_admin_api_invalidates_by_key_prompt_model_and_flush(tmp_path: Path, redis_server: RedisServer) -> None:
    with cache_server(tmp_path, redis_server, admin_keys=["admin-key"], api_keys=["user-key"]) as running:
        admin = {"Authorization": "Bearer admin-key"}
        assert running.client.get("/v1/admin/cache/stats").status_code == 401
        user = {"Authorization": "Bearer user-key"}
        assert running.client.post("/v1/admin/cache/flush", headers=user).status_code == 401

        def miss_then_hit() -> str:
            video = sync(running, BODY, key="user-key")
            assert video["cached"] is False
            assert sync(running, BODY, key="user-key")["cached"] is True
            return video["id"]

        key = stored_cache_key(running, miss_then_hit())
        stats = running.client.get("/v1/admin/cache/stats", headers=admin).json()
        assert stats["enabled"] is True and stats["l1"]["entries"] == 1 and stats["l2"]["entries"] == 1
        assert stats["requests"]["l1_hit"] == 1

        removed = running.client.delete(f"/v1/admin/cache/entries/{key}", headers=admin)
        assert removed.status_code == 200 and removed.json() == {"removed": 1}
        assert running.client.delete(f"/v1/admin/cache/entries/{key}", headers=admin).json() == {"removed": 0}
        miss_then_hit()

        by_prompt = running.client.post("/v1/admin/cache/invalidate", json={"prompt": "a PAPER boat on a river"},
                                        headers=admin)
        assert by_prompt.json() == {"removed": 1}
        miss_then_hit()

        by_model = running.client.post("/v1/admin/cache/invalidate", json={"model": "tiny"}, headers=admin)
        assert by_model.json() == {"removed": 1}
        miss_then_hit()

        assert running.client.post("/v1/admin/cache/flush", headers=admin).json() == {"removed": 1}
        assert redis_names(redis_server) == []
        miss_then_hit()

        for body, param in (({}, "prompt"), ({"prompt": "x", "model": "tiny"}, "model"), ({"bogus": 1}, "bogus"),
                            ({"prompt": ""}, "prompt")):
            bad = running.client.post("/v1/admin/cache/invalidate", json=body, headers=admin)
            assert bad.status_code == 422 and bad.json()["error"]["param"] == param, (body, bad.text)


def test_without_admin_keys_the_admin_api_is_disabled_and_bad_cache_options_are_422(tmp_path: Path) -> None:
    with cache_server(tmp_path, None) as running:  # no Redis: the in-process tier only
        for method, path in (("GET", "stats"), ("POST", "flush"), ("DELETE", "entries/abc")):
            response = running.client.request(method, f"/v1/admin/cache/{path}",
                                              headers={"Authorization": "Bearer anything"})
            assert response.status_code == 403 and "admin API disabled" in response.json()["error"]["message"]

        for options, param in (({"min_similarity": 2}, "cache.min_similarity"),
                               ({"min_similarity": 0.2}, "cache.min_similarity"),
                               ({"bogus": 1}, "cache.bogus"), ({"enabled": "maybe"}, "cache.enabled")):
            response = running.client.post("/v1/videos", json={**BODY, "cache": options})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["param"] == param
        assert sum(running.server.store.count_by_status().values()) == 0
        create = running.client.get("/openapi.json").json()["paths"]["/v1/videos"]["post"]["requestBody"]
        cache_schema = create["content"]["application/json"]["schema"]["properties"]["cache"]["anyOf"][0]
        assert cache_schema["properties"]["min_similarity"]["anyOf"][0]["maximum"] == 1.0

        assert sync(running, BODY)["cached"] is False
        assert sync(running, BODY)["cached"] is True  # L1 alone caches too
        form = {k: str(v) for k, v in BODY.items()}
        assert running.client.post("/v1/videos/sync", data=form).json()["cached"] is True
        opted_out = running.client.post("/v1/videos/sync", data={**form, "cache": '{"enabled": false}'}).json()
        assert opted_out["status"] == "completed" and opted_out["cached"] is False


def test_sensitive_prompts_are_never_cached_nor_logged(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "jane.doe@example.com"
    body = {**BODY, "prompt": f"a postcard for {secret}"}
    with cache_server(tmp_path, redis_server) as running:
        first = sync(running, body)
        second = sync(running, body)
        assert first["cached"] is False and second["cached"] is False
        assert sync(running, {**BODY, "negative_prompt": f"call 555-123-4567 or {secret}"})["cached"] is False
        job = running.server.engine.store.get(first["id"])
        assert job is not None and job.sensitive and job.cache_key is None
        assert secret not in repr(job) and secret not in str(job)
        assert redis_names(redis_server) == []
        assert len(running.server.engine.video_cache.cache.memory) == 0  # type: ignore[union-attr]
        logging.getLogger("reelserve.engine.engine").info("a job: %r", job)  # what logging a job prints
    assert caplog.records, "the log capture saw nothing"
    assert secret not in caplog.text and "postcard" not in caplog.text and "555-123" not in caplog.text


def test_per_tenant_scope_keeps_api_keys_apart(tmp_path: Path, redis_server: RedisServer) -> None:
    with cache_server(tmp_path, redis_server, api_keys=["key-a", "key-b"], cache_scope="per-tenant") as running:
        a = sync(running, BODY, key="key-a")
        assert sync(running, BODY, key="key-b")["cached"] is False
        again = sync(running, BODY, key="key-a")
        assert again["cached"] is True and again["cache_source_id"] == a["id"]
        for name in redis_names(redis_server):  # the tenant is a hash: no key appears in Redis
            assert "key-a" not in name and "key-b" not in name


def test_semantic_matches_a_paraphrase_above_the_threshold_only(tmp_path: Path, redis_server: RedisServer) -> None:
    cached = "a dog running on the beach at sunset"
    body = {**BODY, "prompt": cached, "cache": {"semantic": True, "min_similarity": 0.9}}
    with cache_server(tmp_path, redis_server) as running:
        first = sync(running, body)
        assert first["cached"] is False
        hit = sync(running, {**body, "prompt": "A dog runs along the beach at sunset."})
        assert hit["cached"] is True and hit["cache_source_id"] == first["id"]
        assert 0.9 <= hit["cache_similarity"] < 1.0 and hit["cache_matched_prompt"] == cached
        np.testing.assert_array_equal(frames(running, hit["id"]), frames(running, first["id"]))

        strict = {**body, "prompt": "at sunset, a dog is running on the beach",
                  "cache": {"semantic": True, "min_similarity": 0.999}}
        assert sync(running, strict)["cached"] is False
        # Any other parameter (here the seed) puts a request in another signature: no match at any threshold.
        other_seed = {**body, "prompt": "a dog runs along the beach at sunset", "seed": 12,
                      "cache": {"semantic": True, "min_similarity": 0.5}}
        assert sync(running, other_seed)["cached"] is False
        # Without semantic (the server default) a paraphrase is a miss.
        assert sync(running, {**BODY, "prompt": "a dog runs along the beach at sunset"})["cached"] is False
        assert metric(running, "reelserve_cache_semantic_requests_total", result="hit") == 1
        with redis_server.client() as client:
            assert client.exists(f"{DEFAULT_PREFIX}semantic:{stored_cache_key(running, first['id'])}")


def test_requests_complete_while_redis_is_down_and_caching_resumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with cache_server(tmp_path, redis_server) as running:
        sync(running, BODY)
        errors_before = sum_errors(running)
        redis_server.stop()
        for seed in (21, 22):
            assert sync(running, {**BODY, "seed": seed})["cached"] is False
        assert sync(running, BODY)["cached"] is True  # still in this process's tier
        assert sum_errors(running) > errors_before
        assert "reelserve_cache_errors_total" in running.client.get("/metrics").text

        redis_server.start()  # empty, same port
        seeds = itertools.count(30)  # a new request each time: a repeat would be an L1 hit, never stored

        def stored_again() -> bool:
            sync(running, {**BODY, "seed": next(seeds)})
            return any(":entry:" in name for name in redis_names(redis_server))

        wait_until(stored_again, timeout=30, interval=0.5)


def sum_errors(running: RunningServer) -> float:
    return sum(
        sample.value
        for family in running.server.metrics.cache_errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def test_global_scope_never_names_another_tenants_job_or_prompt(tmp_path: Path, redis_server: RedisServer) -> None:
    """The global scope shares the video; the source job's id and the matched prompt stay with its tenant."""
    cached = "a dog running on the beach at sunset"
    body = {**BODY, "prompt": cached, "cache": {"semantic": True, "min_similarity": 0.9}}
    with cache_server(tmp_path, redis_server, api_keys=["alice", "bob"]) as running:
        first = sync(running, body, key="alice")
        exact = sync(running, body, key="bob")
        assert exact["cached"] is True and exact["cache_source_id"] is None
        np.testing.assert_array_equal(frames(running, exact["id"], key="bob"), frames(running, first["id"], key="alice"))
        paraphrase = {**body, "prompt": "A dog runs along the beach at sunset."}
        semantic = sync(running, paraphrase, key="bob")
        assert semantic["cached"] is True and semantic["cache_similarity"] >= 0.9
        assert semantic["cache_source_id"] is None and semantic["cache_matched_prompt"] is None
        assert cached not in json.dumps(semantic)
        # The tenant that made the video is told where its copy came from, as before.
        own = sync(running, paraphrase, key="alice")
        assert own["cache_source_id"] == first["id"] and own["cache_matched_prompt"] == cached
