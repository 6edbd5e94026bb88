"""Leaderboard figures (matplotlib, Agg backend: works headless): success bars and learning curves.

Error bars are the 95% t-interval of the mean across seeds (none for a single seed).
Learning curves plot each seed's training loss from metrics.csv, one panel per
algorithm because the losses of different algorithms are not on one scale.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qtbench.leaderboard import Aggregate, Row


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    series: dict[str, dict[str, "Aggregate"]],
    columns: list[str],
    path: Path,
    title: str,
    reference: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Grouped bars: one group per column, one bar per label, success in percent.

    ``reference`` (label -> column -> percent) is drawn as a marker on the label's bar:
    the paper's real-robot number for that algorithm.
    """
    plt = _pyplot()
    labels = list(series)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(columns) + 3.5), 4.0))
    marked = False
    for i, label in enumerate(labels):
        xs, shown, heights, errors = [], [], [], [[], []]
        for j, column in enumerate(columns):
            agg = series[label].get(column)
            if agg is None or agg.n == 0:
                continue
            lo, hi = agg.ci95
            xs.append(j + (i - (len(labels) - 1) / 2) * width)
            shown.append(column)
            heights.append(100 * agg.mean)
            errors[0].append(0.0 if math.isnan(lo) else 100 * (agg.mean - lo))
            errors[1].append(0.0 if math.isnan(hi) else 100 * (hi - agg.mean))
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=label)
        ref = (reference or {}).get(label, {})
        marks = [(x, ref[c]) for x, c in zip(xs, shown) if c in ref]
        if marks:
            ax.scatter(*zip(*marks), marker="D", color="black", s=18, zorder=3,
                       label=None if marked else "paper (real robot)")
            marked = True
    ax.set_xticks(range(len(columns)), [c.replace(" ", "\n", 1) if len(c) > 14 else c for c in columns])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _read_curve(path: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                steps.append(float(row["step"]))
                losses.append(float(row["loss"]))
            except (KeyError, TypeError, ValueError):
                continue
    return steps, losses


def learning_curves(curves: dict[str, dict[int, Path]], path: Path, title: str) -> Path | None:
    """Training loss against gradient step: one panel per label, one line per seed."""
    readable = {
        label: {seed: _read_curve(p) for seed, p in seeds.items()} for label, seeds in curves.items()
    }
    readable = {label: {s: c for s, c in seeds.items() if c[0]} for label, seeds in readable.items()}
    readable = {label: seeds for label, seeds in readable.items() if seeds}
    if not readable:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(readable), figsize=(3.6 * len(readable), 3.2), squeeze=False)
    for ax, (label, seeds) in zip(axes[0], readable.items()):
        for seed, (steps, losses) in sorted(seeds.items()):
            ax.plot(steps, losses, linewidth=1, label=f"seed {seed}")
        if all(v > 0 for _, losses in seeds.values() for v in losses):
            ax.set_yscale("log")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel("gradient step")
        ax.legend(fontsize="x-small")
    axes[0][0].set_ylabel("training loss")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_plots(rows: list["Row"], out_dir: Path) -> list[Path]:
    """All leaderboard figures for these rows; returns the files written."""
    from qtbench.leaderboard import HEADLINE_TASK, OVERALL, ordered_tasks
    from qtbench.paper import PAPER_COLUMNS, PAPER_RESULTS

    written = []
    headline = {r.label: r.columns for r in rows if r.task == HEADLINE_TASK and r.label == r.algo}
    if headline:
        paper = {ours: dict(zip(PAPER_COLUMNS, values)) for ours, values in PAPER_RESULTS.values()}
        written.append(bar_chart(headline, list(PAPER_COLUMNS), out_dir / "categories_all.png",
                                 "multi-task models (task all): success per paper category", reference=paper))
    single = [r for r in rows if r.task != HEADLINE_TASK and r.label == r.algo]
    if single:
        tasks = ordered_tasks({r.task for r in single})
        series: dict[str, dict[str, "Aggregate"]] = {}
        for r in single:
            series.setdefault(r.label, {})[r.task] = r.columns[OVERALL]
        written.append(bar_chart(series, tasks, out_dir / "tasks.png", "single-skill models: success per task"))
    for task in sorted({r.task for r in rows}):
        curves = {
            r.label: {run.seed: run.directory / "metrics.csv" for run in r.runs if (run.directory / "metrics.csv").is_file()}
            for r in rows if r.task == task
        }
        image = learning_curves(curves, out_dir / f"learning_curves_{task}.png", f"training loss, task {task}")
        if image is not None:
            written.append(image)
    return written
