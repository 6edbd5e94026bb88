"""The field's aggregate statistics against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtbench import stats


def test_iqm_and_mean_of_a_known_array():
    scores = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 10.0]])  # (2 runs, 4 tasks)
    # sorted 0 0 0 0 0 1 1 10: the middle half is 0 0 0 1
    assert stats.iqm(scores).point == pytest.approx(0.25)
    # per-task means 0, 0.5, 0.5, 5
    assert stats.mean(scores).point == pytest.approx(1.5)


def test_probability_of_improvement_hand_computed():
    same = np.array([[0.2, 0.7], [0.5, 0.1], [0.9, 0.4]])
    assert stats.probability_of_improvement(same, same).point == 0.5
    # pairs (x, y): (.4,.4) tie = 1/2, (.4,.2), (.6,.4), (.6,.2) wins: 3.5 / 4
    x, y = np.array([[0.4], [0.6]]), np.array([[0.4], [0.2]])
    assert stats.probability_of_improvement(x, y).point == pytest.approx(0.875)
    assert stats.probability_of_improvement(y, x).point == pytest.approx(0.125)
    # averaged over tasks: task 1 as above (0.875), task 2 X always below (0)
    x2, y2 = np.array([[0.4, 0.0], [0.6, 0.1]]), np.array([[0.4, 0.5], [0.2, 0.6]])
    assert stats.probability_of_improvement(x2, y2).point == pytest.approx(0.4375)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(x2, y)


def test_bootstrap_intervals_are_stratified_and_reproducible():
    # task 1 runs are all 0.5: a stratified resample keeps that column; task 2 spreads
    scores = np.array([[0.5, 0.0], [0.5, 1.0], [0.5, 1.0]])
    a, b = stats.mean(scores), stats.mean(scores)
    assert a == b  # fixed bootstrap seed: the leaderboard regenerates identically
    # means of resampled task-2 columns are k/3; the overall mean is (0.5 + k/3) / 2
    assert a.lo <= a.point <= a.hi and a.lo >= 0.25 and a.hi <= 0.75
    assert all(abs(6 * v - 1.5 - round(6 * v - 1.5)) < 1e-9 for v in (a.lo, a.hi))  # on the lattice (0.5 + k/3) / 2 = 1/4 + k/6
    single = stats.iqm(scores[:1])
    assert single.point == 0.25 and not single.has_interval and math.isnan(single.lo)


def test_intervals_are_identical_across_calls_and_leave_numpys_global_stream_alone():
    scores = np.random.default_rng(0).random((3, 4))  # continuous: any other resample shows
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first, second = stats.mean(scores), stats.mean(scores)
    x, y = scores, scores[::-1] * 0.9
    assert first == second and first.has_interval
    assert stats.probability_of_improvement(x, y) == stats.probability_of_improvement(x, y)
    assert np.random.random() == expected_next


def test_performance_profile_hand_computed():
    scores = np.array([[0.1, 0.5], [0.9, 0.3]])
    profile, lo, hi = stats.performance_profile(scores, np.array([0.0, 0.4, 1.0]))
    assert profile.tolist() == [1.0, 0.5, 0.0]
    assert lo[0] == hi[0] == 1.0 and lo[2] == hi[2] == 0.0 and lo[1] <= 0.5 <= hi[1]


def test_beats_reads_the_interval():
    assert stats.beats(stats.Estimate(0.8, 0.6, 0.95)) == "yes"
    assert stats.beats(stats.Estimate(0.2, 0.05, 0.4)) == "no (worse)"
    assert stats.beats(stats.Estimate(0.6, 0.3, 0.9)) == "not resolved"
    assert stats.beats(stats.Estimate(1.0)) == "no interval (needs 2+ seeds)"
