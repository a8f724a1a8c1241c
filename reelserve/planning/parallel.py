"""What each parallel layout (``--parallel``) should give for Wan2.2 on H100 and H200 GPUs, from FLOPs
and communication volume: a prediction to plan with until ``bench/gpu/parallel_step.py`` measures it.

Per denoising step with guidance (two forwards), each rank computes its share: ``cfg=2`` halves the
forwards a rank runs, a sequence split of S ranks (Ulysses × ring) gives each 1/S of the tokens (its
queries attend to every key, so attention divides by S as well). Communication per forward, in bf16:

- Ulysses (degree U): per block, all-to-alls of q, k, v and the attention output; each rank sends the
  (U − 1)/U of its (T/S) × d share that other ranks need. Not overlapped with compute.
- Ring (degree R): per block, R − 1 passes of a key/value chunk of (T/R) × (d/U) each; overlapped with
  the chunk's attention, so only what exceeds it is exposed.
- The output projection's gather, (S − 1)/S of T × (patch × channels) per forward; CFG's exchange is one
  latent-sized tensor per step (both negligible, included).

Assumptions, stated so a measurement can replace them: bf16 dense peak 989 TFLOP/s for both GPUs (the
H200 has the H100's compute; its memory is larger and faster), compute at ``efficiency`` of peak (50 %,
the middle of the 40-60 % planning band in docs/gpu.md), NVLink 450 GB/s per direction per GPU at
``link_efficiency`` 70 %. Weights are whole on every rank (the split is of activations, not weights).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from reelserve.parallel.layout import ParallelLayout
from reelserve.planning.wan_sizes import MODELS, WanModel, forward_flops, patch_tokens

BYTES = 2  # bf16
LAYOUTS = ("none", "cfg=2", "ulysses=2", "ring=2", "cfg=2,ulysses=2", "ulysses=4", "ring=4",
           "cfg=2,ulysses=4", "ulysses=8", "cfg=2,ulysses=2,ring=2", "ulysses=4,ring=2")
STEPS = {"ti2v-5b": 50, "a14b": 40}  # each model's default steps


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_tflops: float  # bf16 dense
    memory_gb: float
    link_gb_s: float  # NVLink, per direction per GPU


GPUS = {"H100": Gpu("H100", 989.0, 80.0, 450.0), "H200": Gpu("H200", 989.0, 141.0, 450.0)}


@dataclass(frozen=True)
class LayoutPrediction:
    model: str
    resolution: str
    layout: str
    gpu: str
    ranks: int
    tokens: int
    compute_s: float  # per step, per rank
    exposed_comm_s: float  # per step, communication not hidden behind compute
    comm_gb: float  # per step, sent by each rank
    weights_gb: float  # on each rank
    steps: int

    @property
    def step_s(self) -> float:
        return self.compute_s + self.exposed_comm_s

    @property
    def video_s(self) -> float:
        return self.step_s * self.steps

    @property
    def fits(self) -> bool:
        return self.weights_gb <= GPUS[self.gpu].memory_gb


def predict(model: WanModel, resolution: str, layout: ParallelLayout, gpu: Gpu, efficiency: float = 0.5,
            link_efficiency: float = 0.7) -> LayoutPrediction:
    """One layout's step for ``model`` at ``resolution`` (a label of ``model.resolutions``)."""
    config = model.transformer
    width, height = model.resolutions[resolution]
    latent = model.latent_shape(width, height)
    tokens = patch_tokens(config, latent)
    flops = forward_flops(config, latent, model.text_len, model.per_token_timesteps).total
    forwards = 2 // layout.cfg  # forwards a rank runs per guided step
    compute_s = forwards * flops / layout.sequence / (gpu.peak_tflops * 1e12 * efficiency)
    d, layers = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
    share = tokens / layout.sequence * d  # elements of one (T/S) x d tensor
    ulysses = 4 * share * (layout.ulysses - 1) / layout.ulysses * BYTES * layers
    ring = (layout.ring - 1) * 2 * (tokens / layout.ring) * (d / layout.ulysses) * BYTES * layers
    patch = config["patch_size"][0] * config["patch_size"][1] * config["patch_size"][2]
    gather = tokens * patch * config["out_channels"] * BYTES * (layout.sequence - 1) / layout.sequence
    cfg = (latent[0] * latent[1] * latent[2] * latent[3] * BYTES) if layout.cfg == 2 else 0.0
    bandwidth = gpu.link_gb_s * 1e9 * link_efficiency
    attention_s = forwards * forward_flops(config, latent, model.text_len).attention / layout.sequence / (
        gpu.peak_tflops * 1e12 * efficiency)
    exposed = forwards * (ulysses + gather) / bandwidth + max(0.0, forwards * ring / bandwidth - attention_s)
    exposed += cfg / bandwidth
    params = transformer_params(config) * model.experts
    return LayoutPrediction(
        model=model.name, resolution=resolution, layout=str(layout), gpu=gpu.name, ranks=layout.world, tokens=tokens,
        compute_s=compute_s, exposed_comm_s=exposed, comm_gb=(forwards * (ulysses + ring + gather) + cfg) / 1e9,
        weights_gb=params * BYTES / 1e9, steps=STEPS.get(model.name, 40),
    )


def transformer_params(config: dict) -> float:
    """Parameters of one Wan transformer (blocks, embedders, output), as its modules hold them."""
    d, f, layers = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"], config["num_layers"]
    patch = config["patch_size"][0] * config["patch_size"][1] * config["patch_size"][2]
    block = 8 * d * d + 2 * d * f + 8 * d + f + d + 6 * d + 4 * d  # 2 attentions, ffn, biases, norms, modulation
    embed = patch * config["in_channels"] * d + config["text_dim"] * d + d * d + config["freq_dim"] * d + d * d + \
        d * 6 * d
    return layers * block + embed + d * patch * config["out_channels"] + 2 * d


def table(models: list[str] | None = None, resolutions: tuple[str, ...] = ("480p", "720p"),
          layouts: tuple[str, ...] = LAYOUTS, gpus: tuple[str, ...] = ("H100", "H200")) -> list[LayoutPrediction]:
    """Every combination, models in order; layouts whose Ulysses degree does not divide the heads are left out."""
    rows = []
    for name in models or list(MODELS):
        model = MODELS[name]
        for resolution in resolutions:
            for text in layouts:
                layout = ParallelLayout.parse(text)
                if model.transformer["num_attention_heads"] % layout.ulysses:
                    continue
                rows.extend(predict(model, resolution, layout, GPUS[gpu]) for gpu in gpus)
    return rows


def print_predictions(out: Console, json_path: Path | None = None) -> list[LayoutPrediction]:
    """The table ``reelserve plan --parallel-layouts`` prints (and writes as JSON): a row per model,
    resolution and layout, with H100 and H200 side by side."""
    rows = table()
    by_gpu = {(r.model, r.resolution, r.layout, r.gpu): r for r in rows}
    single = {(r.model, r.resolution, r.gpu): r.step_s for r in rows if r.ranks == 1}
    grid = Table(title="Predicted guided denoising step per --parallel layout (50 % of bf16 peak, NVLink at 70 %)")
    for column in ("model", "res", "layout", "GPUs", "tokens", "s/step H100", "s/step H200", "comm s",
                   "GB/rank/step", "speed-up", "video s", "weights GB/rank"):
        grid.add_column(column, justify="left" if column in ("model", "res", "layout") else "right",
                        no_wrap=column == "layout")
    for r in (r for r in rows if r.gpu == "H100"):
        h200 = by_gpu[(r.model, r.resolution, r.layout, "H200")]
        fits = "fits both" if r.fits else "H200 only" if h200.fits else "fits neither"
        grid.add_row(r.model, r.resolution, r.layout, str(r.ranks), f"{r.tokens:,}", f"{r.step_s:.2f}",
                     f"{h200.step_s:.2f}", f"{r.exposed_comm_s:.3f}", f"{r.comm_gb:.1f}",
                     f"{single[(r.model, r.resolution, r.gpu)] / r.step_s:.2f}x", f"{r.video_s:.0f}",
                     f"{r.weights_gb:.1f} ({fits})")
    out.print(grid)
    if json_path is not None:
        json_path.write_text(json.dumps([{**asdict(r), "step_s": r.step_s, "video_s": r.video_s} for r in rows],
                                        indent=2))
    return rows
