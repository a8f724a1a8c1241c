"""LoRA adapters under load: co-batching (reelserve: rows of any adapter sets share a call, unmerged)
against splitting batches by adapter set (vLLM-Omni's way: rows share a call only with rows of the same
adapters) and against one merged adapter at a time (SGLang's way: the adapter's weights merged into the
base, so a batch takes only that adapter's rows, and switching merges another).

In this process, on the micro model through the server's runner (``PipelineRunner`` with the adapter
bank): ``--clients`` closed-loop clients, client i asking with adapter set i mod 5 (none, or one of 4
random rank-``--rank`` adapters over every linear layer of the transformer), each sending its next
request when its last one finished. The server loop takes the oldest waiting request and fills a batch
of up to ``--batch`` rows as the strategy allows, oldest first. Each strategy runs ``--requests``
requests after a warm-up; latency is from a request's submission to its video. A fourth line runs
the same clients with no adapters at all: what the unmerged adapters cost co-batching.

    .venv/bin/python bench/lora_batching.py [--clients 8 --requests 48 --steps 10 --batch 4 --rank 16]
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from dataclasses import dataclass

import torch
from _harness import machine, median, percentile, print_table

from reelserve.engine.runner import PipelineRunner
from reelserve.models import LoadOptions, load_model
from reelserve.models.lora import LoraWeights, MultiLoraLinear, linear_shapes
from reelserve.schemas import GenerationParams
from reelserve.schemas.inputs import LoraRef


@dataclass
class Waiting:
    client: int
    adapters: tuple[LoraRef, ...]
    submitted: float


def random_adapters(transformer: torch.nn.Module, count: int, rank: int) -> dict[str, LoraWeights]:
    generator = torch.Generator().manual_seed(0)
    shapes = linear_shapes(transformer)
    return {f"adapter-{i}": LoraWeights({name: (torch.randn(rank, i_, generator=generator) * 0.02,
                                                torch.randn(o_, rank, generator=generator) * 0.02)
                                         for name, (i_, o_) in shapes.items() if name.startswith("blocks.")})
            for i in range(count)}


class Merged:
    """One adapter set merged into the base weights at a time (W += scale · B A), switched as needed."""

    def __init__(self, transformer: torch.nn.Module, adapters: dict[str, LoraWeights]) -> None:
        self.layers = {m.name: m.base for m in transformer.modules() if isinstance(m, MultiLoraLinear)}
        self.adapters, self.current = adapters, ()
        self.switches, self.switch_s = 0, 0.0

    def use(self, wanted: tuple[LoraRef, ...]) -> None:
        if wanted == self.current:
            return
        started = time.perf_counter()
        with torch.no_grad():
            for refs, sign in ((self.current, -1.0), (wanted, 1.0)):
                for ref in refs:
                    for name, (a, b) in self.adapters[ref.sha256].pairs.items():
                        self.layers[name].weight.add_(b @ a, alpha=sign * ref.scale)
        self.current = wanted
        self.switches += 1
        self.switch_s += time.perf_counter() - started


def run(strategy: str, runner: PipelineRunner, merged: Merged, args: argparse.Namespace,
        sets: list[tuple[LoraRef, ...]]) -> dict[str, float]:
    waiting = deque(Waiting(c, sets[c % len(sets)], time.perf_counter()) for c in range(args.clients))
    latencies, done, calls, rows = [], 0, 0, 0
    started = time.perf_counter()
    while done < args.requests + args.warmup:
        lead = waiting[0]
        mixes = strategy in ("co-batched", "no adapters")
        fits = (lambda w: True) if mixes else (lambda w: w.adapters == lead.adapters)
        batch = [w for w in waiting if fits(w)][: args.batch]
        for w in batch:
            waiting.remove(w)
        if strategy == "merged":
            merged.use(lead.adapters)
        run_with = (lambda w: ()) if strategy in ("merged", "no adapters") else (lambda w: w.adapters)
        rows_ = [(f"r{done + i}", GenerationParams(
            model="micro", prompt="a red circle moving right", width=64, height=64, num_frames=17, fps=8,
            num_inference_steps=args.steps, guidance_scale=5.0, seed=w.client, loras=run_with(w)))
            for i, w in enumerate(batch)]
        runner.run(rows_)
        now = time.perf_counter()
        for w in batch:
            done += 1
            if done == args.warmup:
                latencies.clear()
                started, calls, rows = now, 0, 0
            elif done > args.warmup:
                latencies.append(now - w.submitted)
            waiting.append(Waiting(w.client, w.adapters, now))  # the client asks again at once
        calls, rows = calls + 1, rows + len(batch)
    merged.use(())
    elapsed = time.perf_counter() - started
    return {"throughput": len(latencies) / elapsed, "p50": median(latencies), "p95": percentile(latencies, 95),
            "rows_per_call": rows / max(calls, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    model = load_model("micro", LoadOptions(device="cpu", lora_adapters=8))
    assert model.adapters is not None
    transformer = model.pipeline.transformer
    adapters = random_adapters(transformer, 4, args.rank)
    model.adapters.load = adapters.__getitem__
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length, accelerated=model.accelerated,
                            adapters=model.adapters)
    sets = [()] + [(LoraRef(name=name, sha256=name, scale=1.0),) for name in adapters]
    merged = Merged(transformer, adapters)
    results = {}
    with torch.inference_mode():
        for strategy in ("co-batched", "split by adapter set", "merged", "no adapters"):
            results[strategy] = run(strategy, runner, merged, args, sets)
    base = results["co-batched"]
    rows = [[name, f"{r['throughput']:.3f}", f"{r['throughput'] / base['throughput']:.2f}", f"{r['p50']:.2f}",
             f"{r['p95']:.2f}", f"{r['p95'] / base['p95']:.2f}", f"{r['rows_per_call']:.2f}"]
            for name, r in results.items()]
    print_table(f"{machine()}; micro 64x64x17, {args.steps} steps, {args.clients} closed-loop clients over 4 "
                f"rank-{args.rank} adapters and none, batches of up to {args.batch}, {args.requests} requests each "
                f"(merged: {merged.switches} switches, {merged.switch_s:.2f} s merging)",
                ["strategy", "videos/s", "vs co-batched", "p50 s", "p95 s", "p95 vs co-batched", "rows a call"], rows)


if __name__ == "__main__":
    main()
