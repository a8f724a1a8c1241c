"""The load report as a picture: latency over time above, queue depth over time below (shared x axis)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reelserve.loadgen.report import LoadReport

MISSING_MATPLOTLIB = "plotting needs matplotlib: pip install 'reelserve[bench]'"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")  # files only: never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_report(report: LoadReport, path: Path) -> Path:
    """Write ``path`` (PNG) and return it."""
    plt = _pyplot()
    fig, (latency, depth) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True, height_ratios=(3, 2))
    try:
        colours = _tier_colours(plt, report)
        _plot_latency(latency, report, colours)
        _plot_queue_depth(depth, report, colours)
        fig.suptitle(_title(report), fontsize=10)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def _tier_colours(plt: Any, report: LoadReport) -> dict[str, Any]:
    tiers = sorted({*report.tiers, *(t for s in report.queue_samples for t in s.by_tier)})
    palette = plt.get_cmap("tab10")
    return {tier: palette(i % 10) for i, tier in enumerate(tiers)}


def _plot_latency(ax: Any, report: LoadReport, colours: dict[str, Any]) -> None:
    for tier, colour in colours.items():
        records = [r for r in report.records if r.tier == tier]
        done = [r for r in records if r.final_status == "completed" and r.e2e_s is not None]
        if done:
            ax.scatter(
                [r.sent_s for r in done],
                [r.e2e_s for r in done],
                s=14,
                color=colour,
                label=f"{tier} completed",
            )
        failed = [r for r in records if r.final_status not in (None, "completed") and r.e2e_s is not None]
        if failed:
            ax.scatter(
                [r.sent_s for r in failed],
                [r.e2e_s for r in failed],
                s=22,
                marker="s",
                facecolors="none",
                edgecolors=colour,
                label=f"{tier} failed/cancelled",
            )
        # Rejections have no latency: marked on the time axis, where they happened.
        rejected = [r for r in records if not r.accepted]
        if rejected:
            ax.scatter(
                [r.sent_s for r in rejected],
                [0.0] * len(rejected),
                s=30,
                marker="x",
                color=colour,
                label=f"{tier} rejected",
            )
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")


def _plot_queue_depth(ax: Any, report: LoadReport, colours: dict[str, Any]) -> None:
    samples = report.queue_samples
    totals = [(s.t_s, s.total) for s in samples if s.total is not None]
    if totals:
        ax.plot([t for t, _ in totals], [v for _, v in totals], color="black", label="total")
    for tier, colour in colours.items():
        points = [(s.t_s, s.by_tier[tier]) for s in samples if tier in s.by_tier]
        if points:
            ax.plot([t for t, _ in points], [v for _, v in points], color=colour, label=tier)
    if not samples:
        ax.text(0.5, 0.5, "no /metrics samples", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("seconds since start (send time)")
    ax.set_ylabel("queue depth")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")


def _title(report: LoadReport) -> str:
    c, o = report.config, report.overall
    p95 = f"{o.e2e_s.p95:.2f}s" if o.e2e_s.p95 is not None else "-"
    return (
        f"{c.get('profile', '?')} at {c.get('rate', '?')} req/s for {c.get('duration_s', '?')}s: "
        f"{o.sent} sent, {o.accepted} accepted, {o.rejected} rejected, {o.completed} completed, e2e p95 {p95}"
    )
