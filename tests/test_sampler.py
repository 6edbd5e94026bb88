"""Sampler targets and windows against values worked out by hand on two tiny episodes."""

import numpy as np
import pytest

from qtbench.data import Episode, TransitionData, WindowSampler
from qtbench.envs.instructions import tokenize

TEXT0, TEXT1 = "open the top drawer", "close the middle drawer"


def tiny_data() -> TransitionData:
    # Episode 0 succeeds at its 3rd step (terminated); episode 1 is cut off after 2 steps.
    ep0 = Episode.from_steps(
        TEXT0, None, states=[[1.0], [2.0], [3.0], [4.0]], actions=[[0.1], [0.2], [0.3]], rewards=[0, 0, 1],
        terminations=[False, False, True], truncations=[False, False, False],
    )
    ep1 = Episode.from_steps(
        TEXT1, None, states=[[10.0], [11.0], [12.0]], actions=[[0.4], [0.5]], rewards=[0, 0],
        terminations=[False, False], truncations=[False, True],
    )
    return TransitionData.from_episodes([ep0, ep1], max_episode_steps=5)


def test_flat_layout():
    d = tiny_data()
    assert d.num_episodes == 2 and d.num_transitions == 5 and len(d.states) == 7
    np.testing.assert_array_equal(d.obs_rows, [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(d.episode_ids, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(d.step_indices, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(d.obs_timestep, [0, 1, 2, 3, 0, 1, 2])
    np.testing.assert_allclose(d.obs_returns_to_go, [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(d.episode_terminated, [True, False])
    np.testing.assert_array_equal(d.instruction_tokens[1], tokenize(TEXT1))
    spec = d.spec_info()
    assert (spec.state_dim, spec.action_dim, spec.max_episode_steps) == (1, 1, 5)
    assert spec.state_mean[0] == pytest.approx(np.mean([1, 2, 3, 4, 10, 11, 12]))


def test_returns_and_nstep_targets():
    s = WindowSampler(tiny_data(), history=2, n_step=2, gamma=0.5)
    b = s.batch(np.arange(5))
    np.testing.assert_allclose(b.reward, [0, 0, 1, 0, 0])
    np.testing.assert_allclose(b.mc_return, [0.25, 0.5, 1.0, 0, 0])
    np.testing.assert_allclose(b.nstep_return, [0.0, 0.5, 1.0, 0, 0])
    # terminated within the m steps -> 0; truncation still bootstraps with gamma^m
    np.testing.assert_allclose(b.bootstrap_discount, [0.25, 0.0, 0.0, 0.25, 0.5])
    # next windows end at s_{t+m}: states 3, 4 (final), 4 (final), 12 (final), 12
    np.testing.assert_allclose(b.next_window.states[:, -1, 0], [3, 4, 4, 12, 12])
    np.testing.assert_array_equal(b.next_window.timesteps[:, -1], [2, 3, 3, 2, 2])


def test_one_step_targets():
    s = WindowSampler(tiny_data(), history=1, n_step=1, gamma=0.9)
    b = s.batch(np.arange(5))
    np.testing.assert_allclose(b.mc_return, [0.81, 0.9, 1.0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(b.nstep_return, [0, 0, 1, 0, 0])
    np.testing.assert_allclose(b.bootstrap_discount, [0.9, 0.9, 0.0, 0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(b.next_window.states[:, 0, 0], [2, 3, 4, 11, 12])


def test_timeout_is_terminal_cuts_the_bootstrap_at_truncation():
    s = WindowSampler(tiny_data(), history=1, n_step=2, gamma=0.5, timeout_is_terminal=True)
    b = s.batch(np.arange(5))
    # Episode 1 was truncated after 2 steps: both of its transitions reach the end within
    # m = 2 steps, so neither bootstraps; episode 0 is unchanged.
    np.testing.assert_allclose(b.bootstrap_discount, [0.25, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(b.nstep_return, [0.0, 0.5, 1.0, 0, 0])


def test_window_padding_and_masks():
    s = WindowSampler(tiny_data(), history=3, n_step=1, gamma=0.5)
    b = s.batch(np.array([0, 1, 2, 3]))
    w = b.window
    assert w.states.shape == (4, 3, 1) and w.actions.shape == (4, 3, 1)
    np.testing.assert_array_equal(w.mask, [[0, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(w.states[..., 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 0, 10]])
    # a_t is the last row; padding rows are zero
    np.testing.assert_allclose(w.actions[..., 0], [[0, 0, 0.1], [0, 0.1, 0.2], [0.1, 0.2, 0.3], [0, 0, 0.4]])
    np.testing.assert_allclose(w.returns_to_go, [[0, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(w.timesteps, [[0, 0, 0], [0, 0, 1], [0, 1, 2], [0, 0, 0]])
    np.testing.assert_array_equal(w.instruction[3], tokenize(TEXT1))
    # The window after the last step of episode 0 holds its final observation, action row zero.
    nw = b.next_window
    np.testing.assert_allclose(nw.states[2, :, 0], [2, 3, 4])
    np.testing.assert_allclose(nw.actions[2, :, 0], [0.2, 0.3, 0.0])
    np.testing.assert_allclose(nw.returns_to_go[2], [1, 1, 0])
    assert w.states.dtype == np.float32 and w.timesteps.dtype == np.int64 and w.mask.dtype == bool


def test_sample_is_reproducible_and_typed():
    s = WindowSampler(tiny_data(), history=2, n_step=3, gamma=0.9)
    a = s.sample(64, np.random.default_rng(3))
    b = s.sample(64, np.random.default_rng(3))
    np.testing.assert_array_equal(a.window.states, b.window.states)
    assert a.reward.shape == (64,) and a.window.instruction.shape[0] == 64
    # no window ever mixes episodes: masked rows carry only one episode's states
    big = (a.window.states[..., 0] >= 10) | ~a.window.mask
    small = (a.window.states[..., 0] < 10) | ~a.window.mask
    assert np.all(big.all(axis=1) | small.all(axis=1))
    batch = a.to_torch()
    assert tuple(batch.window.states.shape) == (64, 2, 1)
