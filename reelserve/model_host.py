"""What only a process that runs the model builds: load options, the placement and acceleration
checks, the text-embedding cache and the runner. The embedded server and the worker import this
module where they load the model; the API role never does, and so never imports torch."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from reelserve.accel.accelerate import check_options
from reelserve.adapters import AdapterRegistry
from reelserve.adapters.checks import publish_layout
from reelserve.engine.live_previews import PreviewMaps
from reelserve.engine.row_inputs import RowInputs
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.text_embeddings import TextEmbeddingCache
from reelserve.metrics import Metrics
from reelserve.models import LoadedModel, LoadOptions, ModelSpec, get_spec, load_model
from reelserve.models.lora import linear_shapes, read_lora
from reelserve.engine.lane_tuning import short_full_batch, tune_lanes
from reelserve.engine.lanes import PipelineLanes
from reelserve.models.options import resolve_placement
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.ranks import ParallelRanks
from reelserve.schemas.errors import invalid
from reelserve.server import accelerations, storage_for
from reelserve.settings import Settings
from reelserve.storage.base import Storage

log = logging.getLogger(__name__)


def load_options(settings: Settings) -> LoadOptions:
    return LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        cpu_offload=settings.cpu_offload,
        vae_tiling=settings.vae_tiling,
        path=settings.model_path,
        accelerations=accelerations(settings),
        onnx_cache_dir=str(settings.data_dir / "onnx"),
        cpu_threads=settings.cpu_threads,
        lora_adapters=settings.lora_cache_adapters if settings.serves_adapters else 0,
        lora_cache_mb=settings.lora_cache_mb,
        graph_breaks=settings.parallel_layout.sequence > 1,
    )


def check_load_options(settings: Settings, spec: ModelSpec) -> None:
    """Every placement and acceleration check that needs no weights: a server that cannot load its
    model refuses to start rather than stay unready."""
    options = load_options(settings)
    device, _ = resolve_placement(options)
    check_options(options.accelerations, device, options.cpu_offload, two_experts=spec.limits.two_experts)
    check_parallel(settings, options, device)


def check_parallel(settings: Settings, options: LoadOptions, device: torch.device) -> None:
    """What a parallel layout cannot run with, refused before anything loads."""
    layout = settings.parallel_layout
    if not layout.parallel:
        return
    accelerations = options.accelerations
    clashes = {
        "pipeline_lanes": (settings.pipeline_lanes or 1) > 1 and "the group's ranks are the worker's one lane",
        "cfg_batching": accelerations.cfg_batching and "the group runs the guidance's branches itself (use cfg=2)",
        "backend": accelerations.backend == "onnx" and "ONNX Runtime runs the transformer whole, on one device",
        "step_cache": accelerations.step_cache == "magcache" and layout.sequence > 1 and (
            "each rank would calibrate its own MagCache ratios, and ranks that skip different steps wait on each "
            "other; use --step-cache fbcache, taylorseer or pab (or cfg=2 alone)"),
        "cpu_offload": options.cpu_offload and "each rank holds its model on its own device",
    }
    for name, why in clashes.items():
        if why:
            raise invalid(name, f"--{name.replace('_', '-')} with --parallel {layout}: {why}")
    if device.type == "cuda" and torch.cuda.device_count() < layout.world:
        raise invalid("parallel", f"--parallel {layout} runs {layout.world} ranks, one per GPU, and this machine "
                                  f"has {torch.cuda.device_count()}")


def start_parallel(model: LoadedModel, settings: Settings, metrics: Metrics | None = None) -> None:
    """Start ``model``'s process group (``--parallel``): followers load the same model, one per device.
    Run on the model's thread, before warm-up (which then runs through the group)."""
    layout = settings.parallel_layout
    transformer = model.pipeline.transformer if model.pipeline.transformer is not None else model.pipeline.transformer_2
    layout.check_model(transformer.config.num_attention_heads)
    options = load_options(settings)
    threads = settings.cpu_threads or max(1, available_cores() // layout.world)
    adapters_from = settings if model.adapters is not None else None
    spec = GroupSpec(layout, partial(rank_model, model.name, options, adapters_from),
                     backend="nccl" if model.device.type == "cuda" else "gloo", timeout_s=settings.parallel_timeout_s,
                     threads=threads if model.device.type == "cpu" else None)
    if model.device.type == "cpu":
        torch.set_num_threads(threads)
    ranks = ParallelRanks(spec, model.pipeline, model.adapters)
    ranks.split_unguided_rows = options.accelerations.step_cache == "none"
    if metrics is not None:
        ranks.on_restart = lambda seconds: metrics.parallel_restart_seconds.observe(seconds)
    ranks.start()
    model.ranks = ranks
    if model.accelerated is not None:
        model.accelerated.on_prime = ranks.prime
        ranks.state.agree_on_skips(model.accelerated)


def rank_model(name: str, options: LoadOptions, adapters_from: Settings | None,
               rank: int) -> tuple[Any, Any, Any]:
    """A follower's model (on its own device: the group has set it), and its adapter bank reading from
    the server's storage as rank 0's does."""
    model = load_model(name, options)
    model.pipeline.text_encoder = None  # rank 0 encodes every prompt: a follower's copy would only take memory
    if model.adapters is not None and adapters_from is not None:
        registry = AdapterRegistry(storage_for(adapters_from))
        model.adapters.load = lambda sha256: read_lora(registry.data(sha256))
    return model.pipeline, model.adapters, model.accelerated


def text_embedding_cache(settings: Settings, metrics: Metrics | None = None) -> TextEmbeddingCache | None:
    """None when the settings turn the cache off; the runner then encodes every prompt afresh."""
    if settings.text_embedding_cache_entries == 0 or settings.text_embedding_cache_mb == 0:
        return None

    def count(hit: bool) -> None:
        if metrics is not None:
            metrics.text_embedding_cache_requests.labels(result="hit" if hit else "miss").inc()

    return TextEmbeddingCache(
        max_entries=settings.text_embedding_cache_entries,
        max_bytes=settings.text_embedding_cache_mb * 2**20,
        on_lookup=count,
    )


def serve_adapters(model: LoadedModel, registry: AdapterRegistry, settings: Settings, metrics: Metrics) -> None:
    """The loaded model's adapter bank reads from ``registry`` and counts into ``metrics``; its layers are
    published for checks elsewhere; ``--adapters-dir``'s files are registered (a file that is no
    adapter for this model stops the start, naming it). Run on the model's thread, after loading."""
    bank = model.adapters
    assert bank is not None
    bank.load = lambda sha256: read_lora(registry.data(sha256))
    bank.on_event = lambda event: metrics.lora_adapter_events.labels(event=event).inc()
    transformer = model.pipeline.transformer if model.pipeline.transformer is not None else model.pipeline.transformer_2
    publish_layout(registry.storage, model.name, linear_shapes(transformer))
    bundled = get_spec(model.name).bundled_adapters
    if bundled is not None and settings.model_path is None:  # trained for the default weights only
        added = registry.add_directory(bundled, model.name)
        log.info("bundled adapters: %s", ", ".join(info.name for info in added))
    if settings.adapters_dir is not None:
        added = registry.add_directory(settings.adapters_dir, model.name)
        log.info("adapters from %s: %s", settings.adapters_dir, ", ".join(info.name for info in added) or "none")


def input_lookups(metrics: Metrics | None) -> Callable[[bool], None] | None:
    """Counts each row's first frame or clip: already encoded (hit), or read and encoded (miss)."""
    if metrics is None:
        return None
    return lambda hit: metrics.input_latents_requests.labels(result="hit" if hit else "miss").inc()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measures_lanes(settings: Settings) -> bool:
    """Lanes and threads are measured at warm-up: on a CPU, with neither set, with a warm-up to
    measure in, and with accelerations that a lane copy gets cheaply (compiling, exporting to ONNX
    or quantizing once per lane would multiply the load time, or the weights)."""
    options = load_options(settings)
    device, _ = resolve_placement(options)
    copied_cheaply = not options.accelerations.compile and options.accelerations.backend == "torch" \
        and options.accelerations.quantization == "none"
    return (device.type == "cpu" and settings.pipeline_lanes is None and not settings.parallel_layout.parallel and settings.cpu_threads is None
            and settings.warmup_runs > 0 and copied_cheaply)


def lanes_to_load(settings: Settings) -> int:
    """Pipeline copies to load: as --pipeline-lanes says; one per core when the split is measured
    (they share their weights, so a copy costs its modules, not its parameters); else one."""
    if settings.pipeline_lanes is not None:
        return settings.pipeline_lanes
    return available_cores() if measures_lanes(settings) else 1


def pipeline_lanes_for(model: LoadedModel, settings: Settings, metrics: Metrics | None = None,
                       storage: Storage | None = None) -> tuple[PipelineLanes, str]:
    """The runner the worker runs batches with (lanes over ``model.lanes``, in use as the settings
    say or as measured here), and why. Call it on the thread that loaded the model: lane 0 runs there.
    ``storage``: where jobs' inputs are read and final latents kept (None: text rows only)."""
    cache = text_embedding_cache(settings, metrics)
    inputs = None if storage is None else RowInputs(storage, keep_latents=settings.keep_latents_s > 0,
                                                    on_lookup=input_lookups(metrics))
    previews = PreviewMaps(model.pipeline)
    if settings.preview_every > 0:  # every job previews: fit the map now, not in the first job's run
        previews.get()
    lanes = PipelineLanes([
        PipelineRunner(lane.pipeline, lane.device, lane.max_sequence_length, text_embeddings=cache,
                       accelerated=lane.accelerated, previews=previews, inputs=inputs, adapters=lane.adapters,
                       ranks=lane.ranks)
        for lane in model.lanes or [model]
    ])
    cores = available_cores()
    if model.ranks is not None:
        layout = model.ranks.layout
        lanes.use(1, torch.get_num_threads() if model.device.type == "cpu" else None)
        return lanes, f"1 lane over a parallel group {layout} of {layout.world} ranks"
    if model.device.type != "cpu":
        lanes.use(1, None)
        return lanes, "1 lane, threads not tuned: the model runs on a GPU"
    if settings.pipeline_lanes is not None or settings.cpu_threads is not None:
        count = settings.pipeline_lanes or 1
        lanes.use(count, settings.cpu_threads or max(1, cores // count))
        if count > 1 and settings.warmup_runs > 0:  # lane 0 is warm; the others' first calls are not
            short_full_batch(model, lanes, settings.max_batch_size)
        return lanes, f"{count} lane(s) x {lanes.threads} thread(s), as set"
    if not measures_lanes(settings):
        lanes.use(1, None)
        return lanes, "1 lane, not tuned (--warmup-runs 0, or an acceleration copied at a cost per lane)"
    choice = tune_lanes(model, lanes, settings.max_batch_size, cores)
    return lanes, choice.describe()
