"""Aggregate statistics of the field (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), computed with rliable's metrics and scipy's bootstrap.

Scores are success rates arranged per algorithm as a (runs x tasks) matrix: runs are
seeds, tasks are the single-skill tasks (one model each) or the skills of one multi-task
model. The point estimates are rliable's: the interquartile mean (IQM, the 25% trimmed
mean over every run and task), the mean of the per-task means, and the probability of
improvement P(X > Y) (per task the Mann-Whitney U statistic over the runs of X and Y,
divided by their number of pairs, averaged over tasks; 0.5 means no difference).

Intervals are rliable's stratified percentile bootstrap (95%): runs are resampled with
replacement within each task, and for a probability of improvement X's and Y's runs are
resampled independently. ``rliable.library`` (its bootstrap) cannot be imported in this
environment: it needs ``arch``, whose 7.x releases fail to import under pandas 3 and whose
8.x releases renamed the ``random_state`` argument rliable 1.2 passes. scipy's multi-sample
``bootstrap`` resamples each sample independently, so with one sample per task (and per
algorithm) it is exactly that stratified bootstrap. A fixed generator seed makes every
leaderboard regeneration identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

BOOTSTRAP_REPS = 2000  # rliable's default for performance profiles; percentile CIs are stable at this size
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
PROFILE_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # success-rate thresholds tau of the performance profiles


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% interval (NaN bounds when there is no spread to resample)."""

    point: float
    lo: float = math.nan
    hi: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))


def _columns(scores: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(scores[:, j], dtype=np.float64) for j in range(scores.shape[1])]


def stratified_interval(
    samples: list[np.ndarray], statistic: Callable[..., np.ndarray], vectorized: bool = False,
    reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic(*samples)``, each sample resampled on its own.

    Returns (lo, hi), NaN where a sample has fewer than two runs (nothing to resample).
    """
    from scipy.stats import bootstrap

    if min(len(s) for s in samples) < 2:
        shape = np.shape(statistic(*samples))
        return np.full(shape, np.nan), np.full(shape, np.nan)
    result = bootstrap(
        tuple(samples), statistic, n_resamples=reps, confidence_level=CONFIDENCE, method="percentile",
        vectorized=vectorized, rng=np.random.default_rng(seed),
    )
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def iqm(scores: np.ndarray) -> Estimate:
    """Interquartile mean over all runs and tasks, with its stratified-bootstrap interval."""
    from rliable import metrics

    lo, hi = stratified_interval(_columns(scores), lambda *c: metrics.aggregate_iqm(np.stack(c, axis=1)))
    return Estimate(float(metrics.aggregate_iqm(scores)), float(lo), float(hi))


def mean(scores: np.ndarray) -> Estimate:
    """Mean of the per-task means, with its stratified-bootstrap interval."""
    from rliable import metrics

    lo, hi = stratified_interval(_columns(scores), lambda *c: metrics.aggregate_mean(np.stack(c, axis=1)))
    return Estimate(float(metrics.aggregate_mean(scores)), float(lo), float(hi))


def _improvement(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """rliable's probability of improvement for samples (x_1..x_M, y_1..y_M), batched along leading axes.

    rliable's own function loops in Python over one resample at a time; this is the same
    statistic (``mannwhitneyu(x, y, 'greater').statistic / (n_x n_y)`` averaged over tasks;
    identical runs give U = n_x n_y / 2, the 0.5 rliable special-cases) for scipy's
    vectorised bootstrap.
    """
    from scipy.stats import mannwhitneyu

    tasks = len(samples) // 2
    per_task = [
        mannwhitneyu(x, y, alternative="greater", axis=axis).statistic / (x.shape[axis] * y.shape[axis])
        for x, y in zip(samples[:tasks], samples[tasks:])
    ]
    return np.mean(per_task, axis=0)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> Estimate:
    """P(X > Y) of algorithm X's (runs x tasks) scores over Y's on the same tasks, with its interval."""
    from rliable import metrics

    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y need the same tasks, got {x.shape[1]} and {y.shape[1]} columns")
    lo, hi = stratified_interval(_columns(x) + _columns(y), _improvement, vectorized=True)
    return Estimate(float(metrics.probability_of_improvement(x, y)), float(lo), float(hi))


def performance_profile(scores: np.ndarray, thresholds: np.ndarray = PROFILE_THRESHOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's score distribution: the fraction of runs (over all tasks) with score > tau,
    for each tau in ``thresholds``; returns (profile, lo, hi) with stratified-bootstrap bounds."""

    def profile(*columns: np.ndarray) -> np.ndarray:
        return (np.stack(columns, axis=1)[..., None] > thresholds).mean(axis=(0, 1))

    lo, hi = stratified_interval(_columns(scores), profile)
    return profile(*_columns(scores)), lo, hi


def beats(estimate: Estimate) -> str:
    """The verdict of a probability of improvement over a baseline, read from its interval."""
    if not estimate.has_interval:
        return "no interval (needs 2+ seeds)"
    if estimate.lo > 0.5:
        return "yes"
    if estimate.hi < 0.5:
        return "no (worse)"
    return "not resolved"
