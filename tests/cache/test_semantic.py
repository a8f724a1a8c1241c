"""The semantic index with the real all-MiniLM-L6-v2 (loaded offline from its package), and its records
in a real Redis. Similarities are measured and printed (run with -s), and thresholds derive from them."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from support import RedisServer

from reelserve.cache import CacheEntry, RedisTier, normalise_prompt, prompt_hash, redis_tier_from_url
from reelserve.cache.redis_tier import DEFAULT_PREFIX
from reelserve.cache.embedder import MiniLMEmbedder
from reelserve.cache.semantic import SemanticIndex, SemanticMatch, SemanticStore

SIG = "sig-a" * 4
OTHER_SIG = "sig-b" * 4

CACHED = "a dog running on the beach at sunset"
PARAPHRASES = ["at sunset, a dog is running on the beach", "a dog runs along the beach at sunset"]
# Same words, different video: another subject, time of day or count.
NEAR_MISSES = ["a horse running on the beach at sunset", "a dog running on the beach at noon",
               "two dogs running on the beach at sunset"]
UNRELATED = "a city skyline at night in the rain"


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def similarity(embedder: MiniLMEmbedder, a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return float(va @ vb)


def test_vectors_are_normalised_float32_of_the_normalised_prompt(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.embed(["a red ball rolling to the left", "A red ball   rolling to the LEFT."])
    assert vectors.dtype == np.float32 and vectors.shape == (2, embedder.dim) == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # one normalised text, one vector
    assert embedder.embed([]).shape == (0, 384)


def test_paraphrases_score_above_0_92_and_above_different_prompts(embedder: MiniLMEmbedder) -> None:
    paraphrase = {p: similarity(embedder, CACHED, p) for p in PARAPHRASES}
    paraphrase["a red ball is rolling towards the left"] = similarity(
        embedder, "a red ball rolling to the left", "a red ball is rolling towards the left")
    different = {p: similarity(embedder, CACHED, p) for p in [*NEAR_MISSES, UNRELATED]}
    for prompt, score in {**paraphrase, **different}.items():
        print(f"similarity {score:.4f}: {prompt!r}")
    assert min(paraphrase.values()) > 0.92
    assert max(different.values()) < min(paraphrase.values())
    assert different[UNRELATED] < min(different[p] for p in NEAR_MISSES)


def test_direction_words_barely_move_the_vector(embedder: MiniLMEmbedder) -> None:
    """A known blind spot, kept as a test so a model change shows up: "left" and "right" score above most
    paraphrases, so no threshold separates them. Why the semantic cache is opt-in."""
    score = similarity(embedder, "a red ball rolling to the left", "a red ball rolling to the right")
    print(f"similarity {score:.4f}: left vs right")
    assert score > 0.95


def build_index(embedder: MiniLMEmbedder) -> SemanticIndex:
    index = SemanticIndex(dim=embedder.dim)
    prompts = [CACHED, UNRELATED, "a red ball rolling to the left"]
    for i, (prompt, vector) in enumerate(zip(prompts, embedder.embed(prompts), strict=True)):
        index.add(SIG, f"k{i}", normalise_prompt(prompt), vector)
    return index


def test_hit_above_the_measured_threshold_and_miss_below_it(embedder: MiniLMEmbedder) -> None:
    index = build_index(embedder)
    lowest_paraphrase = min(similarity(embedder, CACHED, p) for p in PARAPHRASES)
    highest_near_miss = max(similarity(embedder, CACHED, p) for p in NEAR_MISSES)
    threshold = (lowest_paraphrase + highest_near_miss) / 2
    print(f"paraphrases >= {lowest_paraphrase:.4f}, near misses <= {highest_near_miss:.4f}, "
          f"threshold {threshold:.4f}")

    for query in PARAPHRASES:
        match = index.best(SIG, embedder.embed([query])[0], threshold)
        assert match is not None and match.key == "k0" and match.prompt == CACHED
        assert match.similarity == pytest.approx(similarity(embedder, CACHED, query), abs=1e-5)
    for query in NEAR_MISSES:
        assert index.best(SIG, embedder.embed([query])[0], threshold) is None
        # Below the threshold it is still the nearest entry, just not near enough.
        assert index.best(SIG, embedder.embed([query])[0], -1.0).key == "k0"  # type: ignore[union-attr]


def test_only_the_identical_signature_can_match(embedder: MiniLMEmbedder) -> None:
    index = build_index(embedder)
    vector = embedder.embed([CACHED])[0]
    assert index.best(SIG, vector, 0.99) is not None
    assert index.best(OTHER_SIG, vector, -1.0) is None  # same prompt, other seed/size/scope: never
    index.add(OTHER_SIG, "other", CACHED, vector)
    assert index.best(OTHER_SIG, vector, 0.99).key == "other"  # type: ignore[union-attr]
    assert index.best(SIG, vector, 0.99).key == "k0"  # type: ignore[union-attr]


def test_remove_and_replace(embedder: MiniLMEmbedder) -> None:
    index = build_index(embedder)
    dog, ball = embedder.embed([PARAPHRASES[0], "a red ball is rolling towards the left"])
    assert len(index) == 3
    assert index.remove("k0") is True  # row 0: the last row moves into its place
    assert index.remove("k0") is False
    assert len(index) == 2 and "k0" not in index
    assert index.best(SIG, dog, 0.9) is None
    assert index.best(SIG, ball, 0.9).key == "k2"  # type: ignore[union-attr]  # the moved row still answers
    index.add(SIG, "k2", CACHED, embedder.embed([CACHED])[0])  # re-adding a key replaces its vector
    assert len(index) == 2
    assert index.best(SIG, dog, 0.9).key == "k2"  # type: ignore[union-attr]
    assert index.best(SIG, ball, 0.9) is None
    for key in ("k1", "k2"):
        index.remove(key)
    assert len(index) == 0 and index.best(SIG, dog, -1.0) is None
    with pytest.raises(ValueError):
        index.add(SIG, "bad", "x", np.zeros(384, dtype=np.float32))
    with pytest.raises(ValueError):
        index.add(SIG, "bad", "x", np.ones(10, dtype=np.float32))


def test_index_grows_past_its_initial_rows(embedder: MiniLMEmbedder) -> None:
    prompts = [f"a {colour} ball rolling to the left" for colour in
               ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "pink", "grey", "brown")]
    index = SemanticIndex()
    for i, (prompt, vector) in enumerate(zip(prompts, embedder.embed(prompts), strict=True)):
        index.add(SIG, f"c{i}", prompt, vector)
    assert len(index) == 11
    for i, vector in enumerate(embedder.embed(prompts)):
        assert index.best(SIG, vector, 0.999) == SemanticMatch(f"c{i}", prompts[i], pytest.approx(1.0, abs=1e-5))
    index.clear()
    assert len(index) == 0 and index.best(SIG, vector, -1.0) is None


def test_embed_latency_for_one_prompt(embedder: MiniLMEmbedder) -> None:
    embedder.embed(["warm up"])
    times = []
    for i in range(20):
        start = time.perf_counter()
        embedder.embed([f"a dog running on the beach at sunset, take {i}"])
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"embed one prompt on CPU: median {statistics.median(times) * 1000:.1f} ms, "
          f"min {times[0] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms (n={len(times)})")


def test_first_use_from_several_threads_loads_once() -> None:
    fresh = MiniLMEmbedder()
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fresh.embed([CACHED]))
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 4
    for vectors in results[1:]:
        np.testing.assert_array_equal(vectors, results[0])


@pytest.fixture
async def tier(redis_server: RedisServer) -> AsyncIterator[RedisTier]:
    tier = redis_tier_from_url(redis_server.url, ttl_s=600)
    yield tier
    await tier.close()


def cache_entry(key: str, prompt: str, signature: str) -> CacheEntry:
    return CacheEntry(key=key, job_id=f"job-{key}", video_key=f"videos/{key}.mp4", thumbnail_key=None, size=1,
                      created=1.0, model="tiny", prompt_hash=prompt_hash(prompt), signature=signature,
                      model_seconds=1.0, prompt=normalise_prompt(prompt))


async def test_rebuild_from_redis_restores_the_same_best_match(
    embedder: MiniLMEmbedder, tier: RedisTier, redis_server: RedisServer
) -> None:
    store = SemanticStore(tier.client, ttl_s=600)
    original = SemanticIndex()
    saved = [("k0", CACHED, SIG), ("k1", UNRELATED, SIG), ("k2", CACHED, OTHER_SIG)]
    for (key, prompt, signature), vector in zip(saved, embedder.embed([p for _, p, _ in saved]), strict=True):
        await tier.put(cache_entry(key, prompt, signature))
        await store.save(signature, key, normalise_prompt(prompt), vector)
        original.add(signature, key, normalise_prompt(prompt), vector)
    # A record whose cache entry is gone (invalidated elsewhere) must not come back.
    await store.save(SIG, "orphan", "a dog running on a beach at sunset", embedder.embed([CACHED])[0])

    with redis_server.client() as client:
        assert 590 < client.ttl(f"{DEFAULT_PREFIX}semantic:k0") <= 600
        assert 590 < client.ttl(f"{DEFAULT_PREFIX}semantic-by-signature:{SIG}") <= 600
        assert client.hget(f"{DEFAULT_PREFIX}semantic:k0", "prompt") == CACHED.encode()
    assert await store.keys_for_signature(SIG) == {"k0", "k1", "orphan"}

    rebuilt = SemanticIndex()
    assert await store.restore(rebuilt) == 3
    assert "orphan" not in rebuilt
    query = embedder.embed([PARAPHRASES[0]])[0]
    for signature in (SIG, OTHER_SIG):
        before, after = original.best(signature, query, 0.9), rebuilt.best(signature, query, 0.9)
        assert after is not None and before is not None
        assert (after.key, after.prompt) == (before.key, before.prompt)
        assert after.similarity == pytest.approx(before.similarity, abs=1e-6)

    assert await store.touch("k0") is True
    assert await store.delete("k0") is True
    assert await store.delete("k0") is False
    assert await store.touch("k0") is False
    assert await store.keys_for_signature(SIG) == {"k1", "orphan"}
    assert await store.restore(rebuilt) == 2
    assert rebuilt.best(SIG, query, 0.9) is None  # k1 (the skyline) is all that is left under SIG
