"""Live previews: time to the first preview against time to the video, and what a preview costs.

Part 1, over HTTP: one server (``--model``, default micro), jobs sent one at a time, alternately with
``preview_every`` = ``--every`` and without previews; each job's SSE stream is read from the moment it
is created. Reports, per kind: time from the POST to the first ``preview`` event, and to the final
status (the video written); so the cost of previews on time-to-video shows side by side.

Part 2, in this process: for a finished row of the same model, the latent-to-RGB map's fit time
(once per model, at load), one preview (map + animated WebP) against one full VAE decode, and the
preview's mean absolute error against the decoded video (per latent pixel, colour in [0, 1]).

    .venv/bin/python bench/previews.py [--model micro --every 5 --steps 25 --jobs 6]
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
from _harness import machine, median, micro_prompt, print_table, server, settle


def follow_one(url: str, body: dict) -> tuple[float | None, float, int]:
    """(seconds to the first preview event or None, seconds to the final status, previews seen)."""
    with httpx.Client(base_url=url, timeout=600) as http:
        sent = time.perf_counter()
        job = http.post("/v1/videos", json=body).json()
        first, previews, kind = None, 0, None
        with http.stream("GET", f"/v1/videos/{job['id']}/events") as events:
            for line in events.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind == "preview":
                    previews += 1
                    first = first if first is not None else time.perf_counter() - sent
                elif line.startswith("data:") and kind == "status" and json.loads(line[5:])["status"] == "completed":
                    return first, time.perf_counter() - sent, previews
    raise AssertionError(f"{job['id']} did not complete")


def over_http(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float | None, float, int]]] = {"previews": [], "none": []}
    with server("--model", args.model, "--device", args.device, "--no-cache-enabled", "--pipeline-lanes", "1") as url:
        base = {"num_inference_steps": args.steps}
        httpx.post(url + "/v1/videos/sync", json={**base, "prompt": micro_prompt(70), "seed": 99, "preview_every": args.every},
                   timeout=600)  # first-request costs, the map's fit among them
        settle()
        for i in range(args.jobs):
            for label, every in (("previews", args.every), ("none", 0)):
                body = {**base, "prompt": micro_prompt(i), "seed": i, "preview_every": every}
                results[label].append(follow_one(url, body))
    rows = []
    for label, runs in results.items():
        firsts = [f for f, _, _ in runs if f is not None]
        videos = [v for _, v, _ in runs]
        rows.append([label, f"{median(firsts):.3f}" if firsts else "–", f"{median(videos):.3f}",
                     f"{median(firsts) / median(videos):.2f}" if firsts else "–", f"{median([n for *_, n in runs]):.0f}"])
    title = (f"{machine()}; {args.model}, {args.steps} steps, a preview every {args.every} steps vs none, "
             f"{args.jobs} jobs each, one at a time")
    print_table(title, ["", "first preview s (median)", "video s (median)", "first preview / video",
                        "previews a job"], rows)


def in_process(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from reelserve.engine.live_previews import LivePreviews, PreviewMaps
    from reelserve.models import LoadOptions, load_model
    from reelserve.models.wan_family import WanFamily
    from reelserve.schemas import GenerationParams

    model = load_model(args.model, LoadOptions(device=args.device))
    family = WanFamily(model.pipeline, model.max_sequence_length)
    maps = PreviewMaps(model.pipeline)
    started = time.perf_counter()
    preview_map = maps.get()
    fit_s = time.perf_counter() - started
    limits = model.limits
    previews = LivePreviews(family, maps, lambda *_: None)
    preview_s, decode_s, errors = [], [], []
    for i in range(args.jobs):
        params = GenerationParams(model=args.model, prompt=micro_prompt(i), width=limits.default_width,
                                  height=limits.default_height, num_frames=limits.default_frames, fps=limits.default_fps,
                                  num_inference_steps=args.steps, guidance_scale=limits.default_guidance, seed=i)
        with torch.inference_mode():
            rows = family.prepare_rows([("row", params)])
            while not rows[0].done:
                family.scheduler_step(rows, family.denoise_step(rows))
            started = time.perf_counter()
            previews.image(rows[0])
            preview_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            video = family.decode(rows)[0]
            decode_s.append(time.perf_counter() - started)
            shown = preview_map.to_rgb(family.x0_estimate(rows[0])).astype(np.float32) / 255
        spatial = int(model.pipeline.vae_scale_factor_spatial)
        pooled = torch.nn.functional.avg_pool2d(torch.tensor(video).permute(0, 3, 1, 2), spatial).permute(0, 2, 3, 1)
        groups = [pooled[:1]] + [pooled[4 * k - 3 : 4 * k + 1] for k in range(1, shown.shape[0])]
        target = torch.stack([g.mean(0) for g in groups]).numpy()
        errors.append(float(np.abs(shown - target).mean()))
    print_table(f"{machine()}; {args.model} at its default shape, {args.jobs} finished rows",
                ["map fit s (once)", "preview ms (median)", "VAE decode ms (median)", "decode / preview",
                 "preview error (mean, min-max)"],
                [[f"{fit_s:.2f}", f"{median(preview_s) * 1e3:.2f}", f"{median(decode_s) * 1e3:.1f}",
                  f"{median(decode_s) / median(preview_s):.0f}x",
                  f"{np.mean(errors):.3f} ({min(errors):.3f}-{max(errors):.3f})"]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="micro")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--every", type=int, default=5, help="preview_every of the jobs with previews")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    over_http(args)
    in_process(args)


if __name__ == "__main__":
    main()
