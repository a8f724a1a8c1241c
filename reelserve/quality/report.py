"""The quality harness's outputs: a markdown table, the same numbers as JSON, a contact sheet."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from reelserve.micro.contact_sheet import contact_sheet
from reelserve.quality.harness import ADHERENCE_BOUND, ATTRIBUTES, Outcome, Workload

SHEET_CLIPS = 2  # clips per configuration on the contact sheet


def _fmt(value: float | None, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def table(baseline: Outcome, outcomes: list[Outcome]) -> str:
    head = ("| configuration | steps | s/video | speed-up | PSNR dB | SSIM | colour | shape | motion | "
            "mean adh. | Δ adh. | skipped | passes skipped/video | gate |")
    lines = [head, "|" + "---|" * 14]
    for o in [baseline, *outcomes]:
        is_base = o is baseline
        delta = o.mean_adherence - baseline.mean_adherence
        gate = "" if not o.config.safe else f"safe (≤{ADHERENCE_BOUND:g} pts, ≥{o.config.psnr_floor:g} dB)"
        lines.append(
            "| " + " | ".join([
                o.config.name,
                str(o.steps),
                f"{o.seconds_per_video:.3f}",
                "1.00×" if is_base else _fmt(o.speedup, ".2f") + "×",
                "ref" if is_base else _fmt(o.psnr, ".1f"),
                "ref" if is_base else _fmt(o.ssim, ".3f"),
                *(f"{o.adherence[a]:.1f}" for a in ATTRIBUTES),
                f"{o.mean_adherence:.1f}",
                "ref" if is_base else f"{delta:+.1f}",
                _fmt(None if o.skipped_fraction is None else 100 * o.skipped_fraction, ".0f", "n/a") + ("%" if o.skipped_fraction is not None else ""),
                _fmt(o.skipped_passes, ".1f", "n/a"),
                gate,
            ]) + " |"
        )
    return "\n".join(lines)


def as_json(baseline: Outcome, outcomes: list[Outcome], workload: Workload, failures: list[str]) -> dict:
    def row(o: Outcome) -> dict:
        return {
            "name": o.config.name,
            "accelerations": o.config.accelerations.describe(),
            "dtype": o.config.dtype,
            "steps": o.steps,
            "safe": o.config.safe,
            "psnr_floor": o.config.psnr_floor,
            "seconds_per_video": o.seconds_per_video,
            "warm_up_s": o.warm_up_s,
            "speedup": o.speedup,
            "psnr": o.psnr,
            "ssim": o.ssim,
            "adherence": o.adherence,
            "mean_adherence": o.mean_adherence,
            "adherence_delta": o.mean_adherence - baseline.mean_adherence,
            "skipped_fraction": o.skipped_fraction,
            "skipped_passes_per_video": o.skipped_passes,
            "note": o.config.note,
        }

    return {
        "workload": {"prompts": len(workload.prompts), "seeds": list(workload.seeds), "steps": workload.steps,
                     "guidance": workload.guidance, "batch": workload.batch},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
                    or platform.machine(), "threads": torch.get_num_threads()},
        "baseline": row(baseline),
        "configurations": [row(o) for o in outcomes],
        "gate_failures": failures,
    }


def write(out: Path, baseline: Outcome, outcomes: list[Outcome], workload: Workload, failures: list[str],
          command: str) -> list[Path]:
    """Write ``quality.md``, ``quality.json`` and ``quality.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "quality.md"
    verdict = "all safe configurations within their bounds" if not failures else "; ".join(failures)
    md.write_text(
        f"# Quality harness\n\nCommand: `{command}`\n\n"
        f"{len(workload.prompts)} held-out prompts x seeds {list(workload.seeds)}, {workload.steps} baseline steps, "
        f"guidance {workload.guidance:g}, batches of {workload.batch}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.\n\n{table(baseline, outcomes)}\n\nGate: {verdict}\n"
    )
    js = out / "quality.json"
    js.write_text(json.dumps(as_json(baseline, outcomes, workload, failures), indent=2) + "\n")
    clips, labels = [], []
    for o in [baseline, *outcomes]:
        for i, clip in enumerate(o.clips[:SHEET_CLIPS]):
            clips.append(clip)
            labels.append(f"{o.config.name} #{i}")
    png = contact_sheet(clips, labels, out / "quality.png")
    return [md, js, png]
