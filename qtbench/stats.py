"""Aggregate statistics of the field (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), computed with rliable.

Scores are success rates arranged per algorithm as a (runs x tasks) matrix: runs are
seeds, tasks are the single-skill tasks (one model each) or the skills of one multi-task
model. Point estimates are rliable's: the interquartile mean (IQM, the 25% trimmed mean
over every run and task), the mean of the per-task means, the probability of improvement
P(X > Y) (per task the Mann-Whitney U statistic over the runs of X and Y divided by their
number of pairs, averaged over tasks; 0.5 means no difference) and the score
distribution (performance profile).

Intervals are rliable's stratified percentile bootstrap (95%, ``get_interval_estimates``):
runs are resampled with replacement within each task, and for a probability of
improvement X's and Y's runs are resampled independently. A fixed seed makes every
leaderboard regeneration identical. With fewer than two runs there is nothing to resample
and the interval is NaN.
"""

from __future__ import annotations

import math
import warnings
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


def _interval(
    samples: np.ndarray | tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, lo, hi) of ``statistic(*samples)`` by rliable's stratified bootstrap.

    ``samples`` is one (runs x tasks) matrix or a tuple of them (resampled independently).
    """
    from rliable import library

    group = samples if isinstance(samples, tuple) else (samples,)
    point = np.atleast_1d(np.asarray(statistic(*group), dtype=np.float64))
    if min(len(s) for s in group) < 2:
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    # rliable 1.2's stratified resampling draws its indices from numpy's global generator
    # (np.random.choice), whatever random_state it is given: seed that generator for the
    # call and put its state back, so every regeneration is identical and nobody else's
    # random stream moves.
    saved = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        with warnings.catch_warnings():  # arch 7 announces its future Generator API
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            _, intervals = library.get_interval_estimates(
                {"x": samples}, statistic, method="percentile", reps=BOOTSTRAP_REPS,
                confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(BOOTSTRAP_SEED),
            )
    finally:
        np.random.set_state(saved)
    return point, np.asarray(intervals["x"][0]), np.asarray(intervals["x"][1])


def _estimate(samples: np.ndarray | tuple[np.ndarray, ...], statistic: Callable[..., float]) -> Estimate:
    point, lo, hi = _interval(samples, lambda *s: np.array([statistic(*s)]))
    return Estimate(float(point[0]), float(lo[0]), float(hi[0]))


def iqm(scores: np.ndarray) -> Estimate:
    """Interquartile mean over all runs and tasks, with its stratified-bootstrap interval."""
    from rliable import metrics

    return _estimate(np.asarray(scores, np.float64), metrics.aggregate_iqm)


def mean(scores: np.ndarray) -> Estimate:
    """Mean of the per-task means, with its stratified-bootstrap interval."""
    from rliable import metrics

    return _estimate(np.asarray(scores, np.float64), metrics.aggregate_mean)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> Estimate:
    """P(X > Y) of algorithm X's (runs x tasks) scores over Y's on the same tasks, with its interval."""
    from rliable import metrics

    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y need the same tasks, got {x.shape[1]} and {y.shape[1]} columns")
    return _estimate((np.asarray(x, np.float64), np.asarray(y, np.float64)), metrics.probability_of_improvement)


def performance_profile(scores: np.ndarray, thresholds: np.ndarray = PROFILE_THRESHOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's score distribution: the fraction of runs (over all tasks) with score > tau,
    for each tau in ``thresholds``; returns (profile, lo, hi) with stratified-bootstrap bounds."""
    def distribution(s: np.ndarray) -> np.ndarray:  # what rliable's create_performance_profile computes
        return (s[..., None] > thresholds).mean(axis=(0, 1))

    # create_performance_profile takes no seed, so call its bootstrap directly with ours
    return _interval(np.asarray(scores, np.float64), distribution)


def beats(estimate: Estimate) -> str:
    """The verdict of a probability of improvement over a baseline, read from its interval."""
    if not estimate.has_interval:
        return "no interval (needs 2+ seeds)"
    if estimate.lo > 0.5:
        return "yes"
    if estimate.hi < 0.5:
        return "no (worse)"
    return "not resolved"
