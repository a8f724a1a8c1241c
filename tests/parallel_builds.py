"""Models for a parallel group's ranks in tests: module-level functions (ranks are spawned processes,
which import what they run), each giving every rank the same weights."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from reelserve.accel.options import AccelerationOptions
from reelserve.models import LoadOptions, load_model
from reelserve.models.lora import read_lora
from reelserve.models.micro import MICRO_ADAPTERS
from reelserve.models.tiny import build_a14b_layout, build_ti2v_5b_layout, build_tiny_pipeline

OUTLINE = MICRO_ADAPTERS / "outline.safetensors"
OUTLINE_SHA256 = hashlib.sha256(OUTLINE.read_bytes()).hexdigest()
STEP_CACHES = {"tiny-fbcache": AccelerationOptions(step_cache="fbcache", step_cache_threshold=0.2),
               "tiny-taylorseer": AccelerationOptions(step_cache="taylorseer", step_cache_threshold=2)}
SMALL_TILES = {"tile_sample_min_height": 32, "tile_sample_min_width": 32,
               "tile_sample_stride_height": 16, "tile_sample_stride_width": 16}
TOYS = {"tiny": build_tiny_pipeline, "ti2v-5b": build_ti2v_5b_layout, "a14b": build_a14b_layout}


def build(name: str, rank: int) -> tuple[Any, Any, Any]:
    """``name``'s pipeline, adapter bank and accelerations: a toy layout; the committed micro weights with a
    bank that holds the micro model's ``outline`` adapter; tiny compiled, or with First-Block Cache."""
    torch.set_num_threads(1)
    if name.startswith("tiny-not-on-rank-"):  # that rank cannot load; the others can
        if rank == int(name.removeprefix("tiny-not-on-rank-")):
            raise FileNotFoundError("no weights at /models/tiny on this rank")
        name = "tiny"
    if name == "tiny-compiled":  # as a parallel worker with --compile loads it: its blocks break around the exchange
        options = LoadOptions(device="cpu", accelerations=AccelerationOptions(compile=True), graph_breaks=True)
        return load_model("tiny", options).pipeline, None, None
    if name in STEP_CACHES:
        model = load_model("tiny", LoadOptions(device="cpu", accelerations=STEP_CACHES[name]))
        return model.pipeline, None, model.accelerated
    if name.endswith("-tiled"):  # decodes in tiles, small ones, so a toy's video has several
        pipeline = TOYS[name.removesuffix("-tiled")](0)
        pipeline.vae.enable_tiling(**SMALL_TILES)
        return pipeline, None, None
    if name != "micro":
        return TOYS[name](0), None, None
    model = load_model("micro", LoadOptions(device="cpu", lora_adapters=2))
    assert model.adapters is not None
    model.adapters.load = lambda sha256: read_lora(OUTLINE.read_bytes()) if sha256 == OUTLINE_SHA256 else None
    return model.pipeline, model.adapters, None
