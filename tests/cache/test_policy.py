"""CachePolicy: which requests may use the cache, under which key, and the sensitive-prompt rules."""

from __future__ import annotations

import pytest

from reelserve.cache import CachePolicy, SensitiveRules, cache_key
from reelserve.models import get_spec
from reelserve.schemas import CacheOptions, VideoCreateRequest, resolve_request

SETTINGS = {"dtype": "float32", "device": "cpu", "vae_tiling": False}


def decide(policy: CachePolicy, prompt: str = "a red fox in the snow", tenant: str | None = None, **fields: object):  # type: ignore[no-untyped-def]
    request = VideoCreateRequest(prompt=prompt, seed=7, size="32x32", num_frames=5, **fields)  # type: ignore[arg-type]
    params = resolve_request(request, "tiny", get_spec("tiny").limits)
    return params, policy.decide(request, params, tenant)


def test_global_key_is_the_cache_key_and_defaults_apply() -> None:
    policy = CachePolicy(model_version="tiny:code:1", output_settings=SETTINGS)
    params, decision = decide(policy)
    assert decision.key == cache_key(params, "tiny:code:1", SETTINGS, "global")
    assert (decision.semantic, decision.min_similarity, decision.sensitive) == (False, 0.92, False)
    assert decide(policy, tenant="t1")[1].key == decide(policy, tenant="t2")[1].key


def test_request_options_override_the_server_defaults() -> None:
    policy = CachePolicy(model_version="v", semantic_default=True, min_similarity_default=0.9)
    assert decide(policy)[1].semantic is True
    decision = decide(policy, cache=CacheOptions(semantic=False, min_similarity=0.97))[1]
    assert (decision.semantic, decision.min_similarity) == (False, 0.97)
    off = decide(policy, cache=CacheOptions(enabled=False))[1]
    assert off.key is None and off.semantic is False and off.sensitive is False


def test_per_tenant_scope_separates_keys_and_signatures() -> None:
    policy = CachePolicy(model_version="v", scope="per-tenant")
    a, b, again = (decide(policy, tenant=t)[1] for t in ("tenant-a", "tenant-b", "tenant-a"))
    assert a.key != b.key and a.signature != b.signature
    assert a == again
    assert decide(policy, tenant=None)[1] == decide(policy, tenant="anonymous")[1]


def test_settings_and_model_version_are_part_of_the_key() -> None:
    base = decide(CachePolicy(model_version="v1", output_settings=SETTINGS))[1]
    assert base.key != decide(CachePolicy(model_version="v2", output_settings=SETTINGS))[1].key
    bf16 = decide(CachePolicy(model_version="v1", output_settings={**SETTINGS, "dtype": "bfloat16"}))[1]
    assert base.key != bf16.key and base.signature != bf16.signature


@pytest.mark.parametrize(
    "prompt",
    [
        "a postcard addressed to jane.doe@example.com",
        "call me at +44 20 7946 0958",
        "a billboard with (555) 123-4567 in neon",
        "dial 555.123.4567 now",
        "the number 5551234567 on a door",
    ],
)
def test_default_rules_flag_emails_and_phone_numbers(prompt: str) -> None:
    _, decision = decide(CachePolicy(model_version="v"), prompt=prompt)
    assert decision.sensitive and decision.key is None and not decision.semantic


@pytest.mark.parametrize(
    "prompt", ["3 cats and 12 dogs at 1080p", "a 1920x1080 timelapse of 2024", "a bird @ dawn", "room 101"]
)
def test_default_rules_leave_ordinary_numbers_alone(prompt: str) -> None:
    assert not decide(CachePolicy(model_version="v"), prompt=prompt)[1].sensitive


def test_negative_prompt_counts_too() -> None:
    _, decision = decide(CachePolicy(model_version="v"), negative_prompt="no ads for bob@example.org")
    assert decision.sensitive and decision.key is None


def flags_secret(prompt: str) -> bool:
    return "classified" in prompt


def broken_hook(prompt: str) -> bool:
    raise RuntimeError(f"cannot judge {prompt}")


def test_hook_is_loaded_from_module_and_function() -> None:
    rules = SensitiveRules.compile([], hook=f"{__name__}:flags_secret")
    policy = CachePolicy(model_version="v", sensitive=rules)
    assert decide(policy, prompt="a classified map")[1].sensitive
    assert not decide(policy, prompt="a map")[1].sensitive


def test_a_failing_hook_fails_closed_without_logging_the_prompt(caplog: pytest.LogCaptureFixture) -> None:
    policy = CachePolicy(model_version="v", sensitive=SensitiveRules.compile([], hook=f"{__name__}:broken_hook"))
    assert decide(policy, prompt="a quiet harbour")[1].sensitive
    assert "RuntimeError" in caplog.text and "quiet harbour" not in caplog.text


@pytest.mark.parametrize("hook", ["no_colon", "reelserve.nonexistent_module:f", f"{__name__}:missing", "json:__doc__"])
def test_bad_hooks_are_refused_with_a_value_error(hook: str) -> None:
    with pytest.raises(ValueError, match="cache_sensitive_hook"):
        SensitiveRules.compile([], hook=hook)


def test_bad_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_sensitive_patterns"):
        SensitiveRules.compile(["(unclosed"])
