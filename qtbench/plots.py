"""Leaderboard figures (matplotlib, Agg backend: works headless).

Every function draws what it is given: plain numbers, arrays and data frames, never
leaderboard objects, so this module imports nothing of the leaderboard. An interval is a
``(point, lo, hi)`` triple of fractions; NaN bounds draw no error bar.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

Interval = tuple[float, float, float]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bar_chart(
    series: dict[str, dict[str, Interval]],
    columns: list[str],
    path: Path,
    title: str,
    reference: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Grouped bars: one group per column, one bar per label, success in percent with its interval.

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
            if column not in series[label]:
                continue
            point, lo, hi = series[label][column]
            xs.append(j + (i - (len(labels) - 1) / 2) * width)
            shown.append(column)
            heights.append(100 * point)
            errors[0].append(0.0 if math.isnan(lo) else 100 * (point - lo))
            errors[1].append(0.0 if math.isnan(hi) else 100 * (hi - point))
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
    return _save(fig, path)


def loss_curves(curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], path: Path, title: str) -> Path | None:
    """Training loss against gradient step: one panel per label, one line per seed.

    ``curves``: label -> seed -> (steps, losses). One panel each because the losses of
    different algorithms are not on one scale."""
    curves = {label: {s: c for s, c in seeds.items() if len(c[0])} for label, seeds in curves.items()}
    curves = {label: seeds for label, seeds in curves.items() if seeds}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.2), squeeze=False)
    for ax, (label, seeds) in zip(axes[0], curves.items()):
        for seed, (steps, losses) in sorted(seeds.items()):
            ax.plot(steps, losses, linewidth=1, label=f"seed {seed}")
        if all(np.all(losses > 0) for _, losses in seeds.values()):
            ax.set_yscale("log")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel("gradient step")
        ax.legend(fontsize="x-small")
    axes[0][0].set_ylabel("training loss")
    fig.suptitle(title)
    return _save(fig, path)


def success_curves(curves: dict[str, Any], path: Path, title: str) -> Path | None:
    """Learning curves: success against gradient step (left) and training wall-clock (right).

    ``curves``: label -> data frame with columns seed, step, train_seconds, success_rate
    (one row per curve point). Thin lines are seeds, the thick line their mean per step.
    """
    curves = {label: frame for label, frame in curves.items() if len(frame)}
    if not curves:
        return None
    plt = _pyplot()
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(10.0, 3.6), sharey=True)
    for i, (label, frame) in enumerate(curves.items()):
        color = f"C{i}"
        for _, seed_frame in frame.groupby("seed"):
            by_step.plot(seed_frame["step"], 100 * seed_frame["success_rate"], color=color, linewidth=0.6, alpha=0.4)
            by_time.plot(seed_frame["train_seconds"] / 60, 100 * seed_frame["success_rate"], color=color,
                         linewidth=0.6, alpha=0.4)
        mean = frame.groupby("step", as_index=False)[["train_seconds", "success_rate"]].mean()
        by_step.plot(mean["step"], 100 * mean["success_rate"], color=color, linewidth=2, marker="o", label=label)
        by_time.plot(mean["train_seconds"] / 60, 100 * mean["success_rate"], color=color, linewidth=2, marker="o")
    by_step.set_xlabel("gradient step")
    by_time.set_xlabel("training wall-clock (min)")
    by_step.set_ylabel("success rate (%)")
    by_step.set_ylim(-2, 102)
    by_step.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def performance_profiles(
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], thresholds: np.ndarray, path: Path, title: str
) -> Path:
    """rliable's performance-profile plot: fraction of runs with success > tau, with 95% bands.

    ``profiles``: label -> (profile, lo, hi), each evaluated at ``thresholds``."""
    from rliable import plot_utils

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    points = {label: p for label, (p, _, _) in profiles.items()}
    bands = {label: np.stack([np.nan_to_num(lo, nan=p_), np.nan_to_num(hi, nan=p_)])
             for label, (p_, lo, hi) in profiles.items()}
    colors = {label: f"C{i}" for i, label in enumerate(profiles)}
    plot_utils.plot_performance_profiles(points, thresholds, performance_profile_cis=bands, colors=colors, ax=ax,
                                         xlabel=r"success rate $\tau$", ylabel=r"fraction of runs with success $> \tau$")
    ax.legend([plt.Line2D([0], [0], color=c, lw=2) for c in colors.values()], list(colors), fontsize="small")
    ax.set_title(title)
    return _save(fig, path)


def interval_estimates(estimates: dict[str, dict[str, Interval]], metrics: list[str], path: Path, title: str) -> Path:
    """Aggregate estimates as in rliable's figures: one panel per metric (IQM, mean), one
    horizontal 95% interval per label, the point estimate marked.

    ``estimates``: label -> metric -> (point, lo, hi), fractions (drawn in percent)."""
    plt = _pyplot()
    labels = list(estimates)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.5, 0.5 * len(labels) + 1.4),
                             sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for y, label in enumerate(labels):
            point, lo, hi = (100 * v for v in estimates[label][metric])
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.barh(y, hi - lo, left=lo, height=0.6, color=f"C{y}", alpha=0.6)
            ax.plot([point, point], [y - 0.3, y + 0.3], color="black", linewidth=2)
        ax.set_xlim(0, 100)
        ax.set_title(metric)
        ax.set_xlabel("success rate (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels)
    fig.suptitle(title)
    return _save(fig, path)
