"""The arrival plan: deterministic for a seed, within its bounds, shaped by the profile and the mixes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reelserve.loadgen import UNTIERED, LoadConfig, plan_requests

URL = "http://127.0.0.1:9"


def config(**overrides: object) -> LoadConfig:
    return LoadConfig(**{"url": URL, "rate": 20.0, "duration_s": 10.0, "max_requests": 500, **overrides})


def test_the_plan_is_a_function_of_the_config() -> None:
    mixed = {"tier_mix": {"realtime": 0.2, "standard": 0.8}, "repeat_rate": 0.3, "allow_degrade": 0.5}
    assert plan_requests(config(seed=3, **mixed)) == plan_requests(config(seed=3, **mixed))
    assert plan_requests(config(seed=3, **mixed)) != plan_requests(config(seed=4, **mixed))


def test_arrivals_stay_within_duration_and_cap() -> None:
    plan = plan_requests(config(rate=50.0, duration_s=2.0, max_requests=10_000))
    assert plan and all(0 < p.at_s < 2.0 for p in plan)
    assert [p.at_s for p in plan] == sorted(p.at_s for p in plan)
    assert 60 < len(plan) < 140  # Poisson(100)
    capped = plan_requests(config(rate=50.0, duration_s=2.0, max_requests=7))
    assert len(capped) == 7 and [p.at_s for p in capped] == [p.at_s for p in plan[:7]]


def test_the_repeat_rate_leaves_arrivals_and_first_body_alone() -> None:
    fresh = plan_requests(config(seed=5))
    repeated = plan_requests(config(seed=5, repeat_rate=1.0))
    assert [p.at_s for p in fresh] == [p.at_s for p in repeated]
    assert repeated[0].body == fresh[0].body and repeated[0].repeat_of is None
    assert all(p.repeat_of == 0 and p.body == fresh[0].body for p in repeated[1:])


def test_repeats_resend_an_earlier_body_exactly_and_fresh_requests_get_fresh_seeds() -> None:
    plan = plan_requests(
        config(repeat_rate=0.4, tier_mix={"realtime": 1, "batch": 1}, deadlines={"realtime": 30})
    )
    repeats = [p for p in plan if p.repeat_of is not None]
    fresh = [p for p in plan if p.repeat_of is None]
    assert 0.25 < len(repeats) / len(plan) < 0.55
    for p in repeats:
        source = plan[p.repeat_of]  # type: ignore[index]
        assert source.repeat_of is None and source.index < p.index
        assert (p.body, p.tier) == (source.body, source.tier)
    assert len({p.body["seed"] for p in fresh}) == len(fresh)
    for p in fresh:
        assert p.body["priority"] == p.tier
        assert p.body.get("deadline_seconds") == (30 if p.tier == "realtime" else None)


def test_tier_mix_weights_and_no_mix() -> None:
    plan = plan_requests(config(tier_mix={"realtime": 0.2, "standard": 0.8}))
    share = sum(p.tier == "realtime" for p in plan) / len(plan)
    assert 0.1 < share < 0.3
    untiered = plan_requests(config())
    assert all(p.tier == UNTIERED and "priority" not in p.body for p in untiered)


def test_allow_degrade_as_bool_fraction_or_absent() -> None:
    assert all(p.body["allow_degrade"] is True for p in plan_requests(config(allow_degrade=True)))
    assert all("allow_degrade" not in p.body for p in plan_requests(config()))
    mixed = [p.body["allow_degrade"] for p in plan_requests(config(allow_degrade=0.25))]
    assert 0.1 < sum(mixed) / len(mixed) < 0.4


def test_params_are_merged_into_every_body() -> None:
    plan = plan_requests(config(params={"num_inference_steps": 2, "size": "32x32"}, prompts=["only this"]))
    assert all(p.body["num_inference_steps"] == 2 and p.body["size"] == "32x32" for p in plan)
    assert {p.body["prompt"] for p in plan} == {"only this"}


def test_step_and_spike_profiles_change_the_rate() -> None:
    step = plan_requests(config(rate=5.0, profile="step", step_rate=50.0, step_at_s=5.0, max_requests=10_000))
    before, after = sum(p.at_s < 5 for p in step), sum(p.at_s >= 5 for p in step)
    assert after > 4 * before
    spike = plan_requests(
        config(
            rate=5.0,
            profile="spike",
            spike_rate=100.0,
            spike_at_s=4.0,
            spike_length_s=1.0,
            max_requests=10_000,
        )
    )
    inside = sum(4 <= p.at_s < 5 for p in spike)
    assert inside > 60 and len(spike) - inside < 80


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"profile": "step"}, "needs step_rate, step_at_s"),
        ({"profile": "spike", "spike_rate": 5.0}, "needs spike_at_s, spike_length_s"),
        ({"params": {"prompt": "x"}}, "params may not set ['prompt']"),
        ({"tier_mix": {"realtime": 0}}, "positive total"),
        ({"deadlines": {"realtime": 0}}, "deadlines must be > 0"),
        ({"allow_degrade": 1.5}, "between 0 and 1"),
        ({"url": "127.0.0.1:8000"}, "http://"),
        ({"rate": 0}, "greater than 0"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config(**overrides)
