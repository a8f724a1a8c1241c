from support import SCHEDULING_LIMITS as LIMITS
from support import scheduling_params

from reelserve.engine.degrade import degrade, load_level, stronger_levels
from reelserve.schemas.slo import DEFAULT_DEGRADE_LEVELS, DegradeLevel

PARAMS = scheduling_params(steps=25)


def test_load_level_is_the_most_severe_reached() -> None:
    assert load_level(DEFAULT_DEGRADE_LEVELS, 0) is None
    assert load_level(DEFAULT_DEGRADE_LEVELS, 60).name == "high"  # type: ignore[union-attr]
    assert load_level(DEFAULT_DEGRADE_LEVELS, 1000).name == "overload"  # type: ignore[union-attr]
    assert [lvl.name for lvl in stronger_levels(DEFAULT_DEGRADE_LEVELS, None)] == ["high", "overload"]


def test_degrade_caps_steps_and_frames_to_valid_values_and_reports_them() -> None:
    high, overload = DEFAULT_DEGRADE_LEVELS
    run, changes = degrade(PARAMS, high, LIMITS)
    assert (run.num_inference_steps, run.num_frames) == (20, 9)  # 12 frames -> the longest 4k+1 within: 9
    assert {k: (v.requested, v.ran) for k, v in changes.items()} == {
        "num_inference_steps": (25, 20), "num_frames": (17, 9),
    }
    run, changes = degrade(PARAMS, overload, LIMITS)
    assert (run.num_inference_steps, run.num_frames) == (15, 5)
    assert run.batch_key() != PARAMS.batch_key() and run.seed == PARAMS.seed and run.fps == PARAMS.fps


def test_degrade_never_raises_a_parameter() -> None:
    small = PARAMS.model_copy(update={"num_inference_steps": 10, "num_frames": 5})
    run, changes = degrade(small, DegradeLevel(name="x", min_queue_delay_s=0, max_steps=20, max_frames=12), LIMITS)
    assert run == small and changes == {}
