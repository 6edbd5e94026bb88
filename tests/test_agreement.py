"""Demo agreement (qtbench.agreement): cosines, rows and table by hand, and a whole run on a toy
dataset with a policy that sets off the wrong way and then follows the demos."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qtbench.agreement import FIRST_STEPS, agreement_run, agreement_table, demo_rows, format_agreement, motion_cosines


def test_motion_cosines_by_hand():
    policy = np.float32([[1, 0, 0, -1], [1, 1, 0, 1], [0, 0, 0, 1], [0, 0, -2, 0]])
    demo = np.float32([[2, 0, 0, 1], [1, 0, 0, -1], [1, 0, 0, 0], [0, 0, 1, 0]])
    # the gripper (last) dimension is left out; a motion without direction scores 0
    assert motion_cosines(policy, demo) == pytest.approx([1.0, 2**-0.5, 0.0, -1.0])


def test_agreement_table_by_hand():
    cosines = np.array([0.9, 0.1, 0.95, 0.99, 0.5, 0.85])
    labels = np.array([0, 0, 1, 1, FIRST_STEPS, FIRST_STEPS])
    episodes = np.array([0, 1, 0, 1, 0, 1])
    table = agreement_table(cosines, labels, episodes, np.random.default_rng(0))
    assert [r["step"] for r in table] == [0, 1, "later"]
    assert [r["transitions"] for r in table] == [2, 2, 2]
    assert [r["median_cos"] for r in table] == pytest.approx([0.5, 0.97, 0.675])
    assert [r["agree"] for r in table] == [0.5, 1.0, 0.5]
    assert table[1]["agree_ci95"] == [1.0, 1.0]


def toy_data():
    """Two demos and a failure of 7 steps, each moving +x: the demos' steps 0-3 are reported
    one by one and their 3 later steps together (fewer than LATER_PER_EPISODE: all kept)."""
    from qtbench.data import Episode, TransitionData
    from qtbench.envs import layout

    def episode(success: bool) -> Episode:
        states = np.zeros((8, layout.STATE_DIM), np.float32)
        states[:, 0] = np.arange(8) * 0.05  # the gripper's x: its step index, in the state
        actions = np.tile(np.float32([1, 0, 0, -1]), (7, 1))
        rewards = np.float32([0] * 6 + [1 if success else 0])
        return Episode.from_steps("open the top drawer", None, states, actions, rewards,
                                  np.array([0] * 6 + [success], bool), np.array([0] * 6 + [not success], bool))

    return TransitionData.from_episodes([episode(True), episode(False), episode(True)])


class SetsOffWrong:
    """Moves -x at the start (gripper x = 0), +x everywhere else."""

    def act(self, window) -> np.ndarray:
        x = np.asarray(window.states[:, -1, 0])
        return np.where((x < 0.01)[:, None], np.float32([-1, 0, 0, 0]), np.float32([1, 0, 0, 0]))


def test_demo_rows_take_the_demos_first_steps_and_later_ones():
    data = toy_data()
    rows, labels = demo_rows(data, np.random.default_rng(0))
    assert set(data.episode_ids[rows]) == {0, 2}  # demos only
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3] + [FIRST_STEPS] * 6
    assert np.all(data.step_indices[rows][labels < FIRST_STEPS] == labels[labels < FIRST_STEPS])


def test_a_policy_that_sets_off_wrong_disagrees_at_step_0_only():
    from qtbench.algorithms import AlgoConfig

    run = SimpleNamespace(algo_config=AlgoConfig(history=2), data=toy_data(), act=SetsOffWrong().act, run_dir="r",
                          config={"algo": "toy", "task": "drawer_open"}, checkpoint_step=5)
    result = agreement_run(run, progress=False)
    assert result["demo_episodes"] == 2
    assert [(r["step"], r["agree"], r["median_cos"]) for r in result["steps"]] == [
        (0, 0.0, -1.0), (1, 1.0, 1.0), (2, 1.0, 1.0), (3, 1.0, 1.0), ("later", 1.0, 1.0)]
    text = format_agreement(result)
    assert "toy on drawer_open (step 5)" in text and "| 0 | 2 | -1.00 | 0.0 [0.0, 0.0] |" in text
