"""What the API role makes of the workers' heartbeats: a model is loaded if some live worker holds it,
else its swap is the quickest bring-in among the live workers that serve it."""

from __future__ import annotations

from reelserve.stats.residency import FleetResidency


def worker(name: str, model: str, state: str = "idle", **fields: object) -> dict[str, object]:
    return {"name": name, "model": model, "state": state, "running": 0, **fields}


def test_the_quickest_live_worker_counts_and_a_loaded_one_means_no_swap() -> None:
    fleet = FleetResidency()
    fleet.update([
        worker("w1-micro", "micro", loaded=False, swap_in_s=2.5),
        worker("w2-micro", "micro", "busy", loaded=False, swap_in_s=1.5),
        worker("w3-micro", "micro", "stale", loaded=True, swap_in_s=0.0),  # gone quiet: takes no jobs
        worker("w1-tiny", "tiny", loaded=True, swap_in_s=0.0),
    ])
    assert not fleet.loaded("micro") and fleet.swap_cost("micro") == 1.5
    assert fleet.loaded("tiny") and fleet.swap_cost("tiny") == 0.0
    fleet.update([worker("w1-micro", "micro", loaded=False, swap_in_s=2.5), worker("w4", "micro")])
    assert fleet.loaded("micro") and fleet.swap_cost("micro") == 0.0  # a one-model worker: always loaded


def test_a_model_no_live_worker_serves_has_no_swap_to_count() -> None:
    fleet = FleetResidency()
    assert fleet.swap_cost("micro") == 0.0 and not fleet.loaded("micro")
    fleet.update([worker("w1-micro", "micro", "loading", loaded=False, swap_in_s=3.0)])
    assert fleet.swap_cost("micro") == 0.0
