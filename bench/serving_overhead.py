"""Serving overhead: one request through HTTP (sync endpoint, real server process at its defaults)
vs the same batch run directly in-process by the runner (the engine's own denoising loop, with the
server's default accelerations), and vs diffusers' own ``WanPipeline.__call__`` on the same
request, same model and settings, interleaved so drift hits all of them. A second table itemises
the server's time from the video object's own timings.

    .venv/bin/python bench/serving_overhead.py [--runs 10] [--model tiny --size 128x128 --frames 17 --steps 8]
        [--server-args "--no-continuous-batching --no-preemption"]
"""

from __future__ import annotations

import argparse
import time

import httpx
import torch
from _harness import machine, median, print_table, server, settle

from reelserve.accel.options import SERVING_DEFAULTS
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.text_embeddings import TextEmbeddingCache
from reelserve.models import LoadOptions, load_model
from reelserve.schemas import VideoCreateRequest, resolve_request
from reelserve.video import encode_mp4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--server-args", default="", help="more flags for the server, e.g. '--no-preemption'")
    args = parser.parse_args()
    body = {"prompt": "a lighthouse in a storm", "size": args.size, "num_frames": args.frames,
            "num_inference_steps": args.steps, "seed": 1}

    model = load_model(args.model, LoadOptions(device="cpu", accelerations=SERVING_DEFAULTS))
    model.warm_up(2)
    # With a text-embedding cache, as the server has: the same prompt each run is encoded once by both.
    runner = PipelineRunner(model.pipeline, model.device, model.max_sequence_length,
                            text_embeddings=TextEmbeddingCache(), accelerated=model.accelerated)
    params = resolve_request(VideoCreateRequest(**body), args.model, model.limits)

    direct, direct_encoded, http, diffusers_call = [], [], [], []
    timings: dict[str, list[float]] = {"queue_s": [], "inference_s": [], "encode_s": [], "total_s": []}
    # No result cache: every run repeats the same seeded request, which would otherwise be a cache hit.
    with (
        server("--model", args.model, "--device", "cpu", "--warmup-runs", "2", "--no-cache-enabled",
               *args.server_args.split()) as url,
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        client.post("/v1/videos/sync", json=body)  # first-request costs, as warm-up
        for _ in range(args.runs):
            settle()  # each path starts on a machine idle for a load sample (the server's boost needs one)
            started = time.perf_counter()
            frames = runner.run([("bench", params)]).frames["bench"]
            direct.append(time.perf_counter() - started)
            encode_mp4(frames, params.fps)
            direct_encoded.append(time.perf_counter() - started)

            settle()
            started = time.perf_counter()
            with torch.inference_mode():
                model.pipeline(
                    prompt=[params.prompt], negative_prompt=[params.negative_prompt], height=params.height,
                    width=params.width, num_frames=params.num_frames, num_inference_steps=params.num_inference_steps,
                    guidance_scale=params.guidance_scale, generator=[torch.Generator().manual_seed(params.seed)],
                    output_type="np", max_sequence_length=model.max_sequence_length,
                )
            diffusers_call.append(time.perf_counter() - started)

            settle()
            started = time.perf_counter()
            job = client.post("/v1/videos/sync", json=body).json()
            assert job["status"] == "completed", job
            http.append(time.perf_counter() - started)
            for name, values in timings.items():
                values.append(job["timings"][name])

    base = median(direct)
    rows = [
        ["runner (the engine's loop), in-process", f"{base * 1000:.0f}", "1.00"],
        ["diffusers WanPipeline.__call__, in-process", f"{median(diffusers_call) * 1000:.0f}",
         f"{median(diffusers_call) / base:.2f}"],
        ["runner + MP4 encode, in-process", f"{median(direct_encoded) * 1000:.0f}",
         f"{median(direct_encoded) / base:.2f}"],
        ["HTTP POST /v1/videos/sync (server process)", f"{median(http) * 1000:.0f}", f"{median(http) / base:.2f}"],
    ]
    # Each run's request against the runner + encode just before it: drift between runs (this box
    # moved 20 % within minutes) cancels in the pair, not in the medians' ratio.
    paired = median([wall / encoded for wall, encoded in zip(http, direct_encoded, strict=True)])
    # The server's own cost: each request against its own pipeline call (from its timings) plus the
    # bare MP4 encode of the same run. A process's speed at the same work differs by up to 15 % from
    # another's, for the process's life (seen: the server's call 23 ms faster than the bench's, then
    # 15 ms slower, a restart apart), which no pairing cancels.
    own = median([wall / (inference + encoded - direct_s) for wall, inference, encoded, direct_s in zip(
        http, timings["inference_s"], direct_encoded, direct, strict=True)])
    print_table(
        f"Serving overhead, {args.model} {args.size} x{args.frames} frames, {args.steps} steps, "
        f"median of {args.runs} interleaved runs\n{machine()}",
        ["path", "median ms", "ratio to the runner"], rows,
    )
    print(f"HTTP / (runner + MP4 encode), median of the {args.runs} runs' own ratios: {paired:.3f}")
    print(f"HTTP / (the server's own pipeline call + MP4 encode), median of the runs' ratios: {own:.3f}")
    print_table("Where the server's time goes (medians; from the video object's timings)",
                ["part", "median ms"], itemised(http, timings, median(direct), median(direct_encoded)))


def itemised(http: list[float], timings: dict[str, list[float]], runner_s: float, runner_encoded_s: float) -> list[list[str]]:
    """The HTTP request in parts: outside the job (request, validation, creation, response), the fill
    window and claim (queue), the pipeline call, writing the outputs, and the rest of the job (its
    final save and events). Beside each, what the in-process runner spent on the same part."""
    outside = [wall - total for wall, total in zip(http, timings["total_s"], strict=True)]
    rest = [total - queue - inference - encode for total, queue, inference, encode in zip(
        timings["total_s"], timings["queue_s"], timings["inference_s"], timings["encode_s"], strict=True)]

    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:.1f}"

    return [
        ["HTTP outside the job: request, validation, creation, response", ms(outside)],
        ["queue: the fill window and the claim", ms(timings["queue_s"])],
        [f"pipeline call (in-process runner: {runner_s * 1000:.1f})", ms(timings["inference_s"])],
        [f"MP4 + storage (in-process MP4: {(runner_encoded_s - runner_s) * 1000:.1f})", ms(timings["encode_s"])],
        ["rest of the job: final save, events", ms(rest)],
        ["total over HTTP", ms(http)],
    ]


if __name__ == "__main__":
    main()
