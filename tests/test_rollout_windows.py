"""Evaluation windows follow the sampler's layout step by step."""

import numpy as np

from qtbench.data import RolloutWindows
from qtbench.envs.instructions import tokenize


def test_rolling_windows():
    rw = RolloutWindows(num_envs=2, history=3, state_dim=2, action_dim=1, target_return=1.0)
    rw.start(np.array([0, 1]), np.array([[1, 1], [5, 5]], np.float32), ["open the top drawer", "close the top drawer"])
    w = rw.window()
    np.testing.assert_array_equal(w.mask, [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_allclose(w.returns_to_go, [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(w.instruction[1], tokenize("close the top drawer"))
    rw.record(np.array([[0.5], [-0.5]]), np.array([0.0, 1.0]), np.array([[2, 2], [6, 6]], np.float32))
    w = rw.window()
    np.testing.assert_array_equal(w.mask, [[0, 1, 1], [0, 1, 1]])
    np.testing.assert_allclose(w.states[0, :, 0], [0, 1, 2])
    np.testing.assert_allclose(w.actions[:, :, 0], [[0, 0.5, 0], [0, -0.5, 0]])
    np.testing.assert_allclose(w.returns_to_go, [[0, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(w.timesteps, [[0, 0, 1], [0, 0, 1]])
    rw.record(np.array([[0.1], [0.2]]), np.array([0.0, 0.0]), np.array([[3, 3], [7, 7]], np.float32))
    rw.record(np.array([[0.3], [0.4]]), np.array([0.0, 0.0]), np.array([[4, 4], [8, 8]], np.float32))
    w = rw.window()
    np.testing.assert_allclose(w.states[0, :, 0], [2, 3, 4])
    np.testing.assert_array_equal(w.timesteps[0], [1, 2, 3])
    np.testing.assert_allclose(w.actions[0, :, 0], [0.1, 0.3, 0])
    # restarting one slot leaves the other untouched
    rw.start(np.array([1]), np.array([[9, 9]], np.float32), ["open the top drawer"])
    w2 = rw.window()
    np.testing.assert_array_equal(w2.mask[1], [0, 0, 1])
    np.testing.assert_allclose(w2.states[0], w.states[0])
    np.testing.assert_array_equal(w2.instruction[1], tokenize("open the top drawer"))
