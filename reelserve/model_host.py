"""What only a process that runs the model builds: load options, the placement and acceleration
checks, the text-embedding cache and the runner. The embedded server and the worker import this
module where they load the model; the API role never does, and so never imports torch."""

from __future__ import annotations

from reelserve.accel.accelerate import check_options
from reelserve.engine.runner import PipelineRunner
from reelserve.engine.text_embeddings import TextEmbeddingCache
from reelserve.metrics import Metrics
from reelserve.models import LoadedModel, LoadOptions, ModelSpec
from reelserve.models.options import cpu_threads, resolve_placement
from reelserve.models.thread_tuning import tune_cpu_threads
from reelserve.server import accelerations
from reelserve.settings import Settings


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
    )


def check_load_options(settings: Settings, spec: ModelSpec) -> None:
    """Every placement and acceleration check that needs no weights: a server that cannot load its
    model refuses to start rather than stay unready."""
    options = load_options(settings)
    device, _ = resolve_placement(options)
    check_options(options.accelerations, device, options.cpu_offload, two_experts=spec.limits.two_experts)


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


def cpu_threads_for(model: LoadedModel, settings: Settings) -> tuple[int | None, str]:
    """Torch's thread count for the pipeline thread, and why: as ``--cpu-threads`` says; unset on
    CPU, measured as part of warm-up (``thread_tuning``); on a GPU, or with no warm-up, left alone
    (None: every core the process may use, as loading set it)."""
    if model.device.type != "cpu":
        return None, "not tuned: the model runs on a GPU"
    if settings.cpu_threads is not None:
        return settings.cpu_threads, f"{settings.cpu_threads}, as --cpu-threads says"
    if settings.warmup_runs == 0:  # a start that skips its measurements skips this one too
        return None, "not tuned: --warmup-runs 0"
    choice = tune_cpu_threads(model, settings.max_batch_size, cpu_threads(load_options(settings)))
    return choice.threads, f"{choice.describe()}"


def runner_for(
    model: LoadedModel, settings: Settings, metrics: Metrics | None = None, cpu_threads: int | None = None
) -> PipelineRunner:
    return PipelineRunner(
        model.pipeline,
        model.device,
        model.max_sequence_length,
        text_embeddings=text_embedding_cache(settings, metrics),
        accelerated=model.accelerated,
        cpu_threads=cpu_threads,
    )
