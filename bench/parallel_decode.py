"""A tiled VAE decode of one video, shared among a parallel group's ranks (``reelserve/parallel/decode.py``)
against one process: the Wan2.1 VAE at its real width (random weights, seeded; nothing downloaded), one
row, on CPU processes with gloo.

Side by side in one run: one process with ``--threads`` torch threads, one with a rank's threads (so
the ranks' overlap shows), and ``--ranks`` processes of ``--threads / --ranks`` threads each (the same cores), rank 0 timing ``SharedDecode.gather`` from the
command to the blended video. Medians of ``--runs`` after one untimed run each; the largest difference
from the single process's video is printed (not zero: the two use different thread counts, whose
kernels sum in different orders; at equal threads it is zero, ``tests/parallel/test_decode.py``).

    .venv/bin/python bench/parallel_decode.py [--size 256 --frames 9 --tile 128 --ranks 2 --threads 2 --runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import torch
import torch.distributed as dist
from _harness import free_port, machine, median, print_table
from diffusers import AutoencoderKLWan

from reelserve.models.latent_space import denormalise
from reelserve.parallel.decode import SharedDecode, tiles_of


def wan21_vae(tile: int) -> Any:
    """The Wan2.1 VAE's layout at full width (diffusers' defaults), the same random weights everywhere."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval()
    vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                      tile_sample_stride_height=tile * 3 // 4, tile_sample_stride_width=tile * 3 // 4)
    return vae


def latents(size: int, frames: int) -> torch.Tensor:
    return torch.randn(1, 16, (frames - 1) // 4 + 1, size // 8, size // 8, generator=torch.Generator().manual_seed(1))


def follower(rank: int, args: argparse.Namespace, address: str) -> None:
    torch.set_num_threads(max(1, args.threads // args.ranks))
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=args.ranks)
    decoder, z = SharedDecode(wan21_vae(args.tile), rank, args.ranks), latents(args.size, args.frames)
    with torch.inference_mode():
        for _ in range(args.runs + 1):
            dist.barrier()
            decoder.send_share(z)
    dist.destroy_process_group()


def shared_seconds(args: argparse.Namespace) -> tuple[list[float], torch.Tensor]:
    address = f"tcp://127.0.0.1:{free_port()}"
    context = multiprocessing.get_context("spawn")
    others = [context.Process(target=follower, args=(rank, args, address)) for rank in range(1, args.ranks)]
    for process in others:
        process.start()
    torch.set_num_threads(max(1, args.threads // args.ranks))
    dist.init_process_group("gloo", init_method=address, rank=0, world_size=args.ranks)
    decoder, z = SharedDecode(wan21_vae(args.tile), 0, args.ranks), latents(args.size, args.frames)
    seconds = []
    try:
        with torch.inference_mode():
            for _ in range(args.runs + 1):
                dist.barrier()
                started = time.perf_counter()
                video = decoder.gather(z)
                seconds.append(time.perf_counter() - started)
    finally:
        dist.destroy_process_group()
        for process in others:
            process.join(120)
    return seconds[1:], video


def alone_seconds(args: argparse.Namespace, threads: int) -> tuple[list[float], torch.Tensor]:
    torch.set_num_threads(threads)
    vae, z = wan21_vae(args.tile), latents(args.size, args.frames)
    seconds = []
    with torch.inference_mode():
        for _ in range(args.runs + 1):
            started = time.perf_counter()
            video = vae.decode(denormalise(vae, z), return_dict=False)[0]
            seconds.append(time.perf_counter() - started)
    return seconds[1:], video


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tiles = tiles_of(wan21_vae(args.tile), tuple(latents(args.size, args.frames).shape))
    per_rank = max(1, args.threads // args.ranks)
    alone, expected = alone_seconds(args, args.threads)
    narrow, _ = alone_seconds(args, per_rank)
    shared, video = shared_seconds(args)
    difference = (video - expected).abs().max().item()
    print(f"machine: {machine()}; one {args.size}x{args.size} video of {args.frames} frames, {len(tiles or [])} tiles "
          f"of {args.tile} px; Wan2.1 VAE layout, random weights; largest difference {difference:.1e}")
    print_table("Tiled decode of one video", ["decode", "threads", "median s", "speed-up"], [
        ["one process", str(args.threads), f"{median(alone):.2f}", "1.00x"],
        ["one process", str(per_rank), f"{median(narrow):.2f}", f"{median(alone) / median(narrow):.2f}x"],
        [f"{args.ranks} ranks (gloo)", f"{args.ranks} x {per_rank}", f"{median(shared):.2f}",
         f"{median(alone) / median(shared):.2f}x"],
    ])


if __name__ == "__main__":
    main()
