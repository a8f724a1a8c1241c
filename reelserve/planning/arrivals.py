"""The simulated requests: when each arrives, what it asks for, which tier, and which earlier request
it repeats. One seeded RNG draws them, so a workload always yields the same arrivals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from reelserve.planning.workload import Workload


@dataclass(frozen=True)
class Arrival:
    """One request: when, what (index into ``Workload.mix``), which tier, and its content (equal for
    identical requests: a repeat has its source's content)."""

    time_s: float
    shape: int
    tier: str
    content: int


def generate_arrivals(workload: Workload) -> list[Arrival]:
    """The workload's arrivals, from its seed. As in the load generator, a repeat resends a uniformly
    chosen earlier non-repeat request: same shape, same tier."""
    rng = random.Random(workload.seed)
    shape_weights = [shape.weight for shape in workload.mix]
    tier_names, tier_weights = zip(*workload.tier_mix.items(), strict=True)
    changes = sorted(workload.rate_changes())
    arrivals: list[Arrival] = []
    fresh: list[Arrival] = []
    t = 0.0
    while len(arrivals) < workload.requests:
        gap = rng.expovariate(workload.rate_at(t))
        boundary = next((c for c in changes if c > t), math.inf)
        if t + gap >= boundary:  # the rate changes first; arrivals are memoryless, so draw again from there
            t = boundary
            continue
        t += gap
        if workload.max_duration_s is not None and t > workload.max_duration_s:
            break
        if fresh and rng.random() < workload.repeat_rate:
            source = fresh[rng.randrange(len(fresh))]
            arrivals.append(Arrival(t, source.shape, source.tier, source.content))
            continue
        tier = rng.choices(tier_names, tier_weights)[0]
        shape = rng.choices(range(len(workload.mix)), shape_weights)[0]
        fresh.append(Arrival(t, shape, tier, len(arrivals)))
        arrivals.append(fresh[-1])
    return arrivals
