import pytest

from reelserve.engine.tiers import TierTable
from reelserve.schemas import ReelserveError, VideoCreateRequest
from reelserve.schemas.slo import DEFAULT_TIERS, TenantPolicy


def table() -> TierTable:
    return TierTable(
        DEFAULT_TIERS, "standard",
        tenants={"paid": TenantPolicy(tier="realtime"), "free": TenantPolicy(tier="batch", allowed_tiers=["batch"])},
    )


def test_the_tier_comes_from_the_request_within_what_the_key_allows() -> None:
    tiers = table()
    assert tiers.place(VideoCreateRequest(prompt="x"), None).tier.name == "standard"
    assert tiers.place(VideoCreateRequest(prompt="x"), "paid").tier.name == "realtime"
    assert tiers.place(VideoCreateRequest(prompt="x", priority="batch"), "paid").tier.name == "batch"
    with pytest.raises(ReelserveError) as refused:
        tiers.place(VideoCreateRequest(prompt="x", priority="realtime"), "free")
    assert refused.value.code == "forbidden" and refused.value.param == "priority"
    with pytest.raises(ReelserveError) as unknown:
        tiers.place(VideoCreateRequest(prompt="x", priority="gold"), None)
    assert unknown.value.param == "priority" and "realtime, standard, batch" in unknown.value.message


def test_deadline_defaults_to_the_tier_and_is_capped_by_it() -> None:
    tiers = table()
    placed = tiers.place(VideoCreateRequest(prompt="x", priority="realtime"), None)
    assert placed.deadline_s == 120 and placed.allow_degrade is False
    assert tiers.place(VideoCreateRequest(prompt="x", deadline_seconds=30), None).deadline_s == 30
    with pytest.raises(ReelserveError) as late:
        tiers.place(VideoCreateRequest(prompt="x", priority="realtime", deadline_seconds=601), None)
    assert late.value.param == "deadline_seconds" and "600" in late.value.message


def test_a_policy_naming_an_unknown_tier_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="gold"):
        TierTable(DEFAULT_TIERS, "standard", tenants={"t": TenantPolicy(tier="gold")})
    with pytest.raises(ValueError, match="default tier"):
        TierTable(DEFAULT_TIERS, "gold")
