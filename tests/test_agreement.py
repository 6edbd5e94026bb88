"""Demo agreement (qtbench.agreement): cosines, rows and table by hand, and a whole run on a toy
dataset with a policy that sets off the wrong way and then follows the demos."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qtbench.agreement import (
    FIRST_STEPS,
    agreement_run,
    agreement_table,
    demo_rows,
    format_agreement,
    motion_cosines,
    switch_rows,
)


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


def toy_data(close_at: int | None = None, open_at: int | None = None):
    """Two demos and a failure of 7 steps, each moving +x: the demos' steps 0-3 are reported
    one by one and their 3 later steps together (fewer than LATER_PER_EPISODE: all kept).
    With ``close_at``, every episode's finger command closes from that step on (the failure's
    one step earlier); with ``open_at`` too, it opens again from that step on (the failure's
    one step later)."""
    from qtbench.data import Episode, TransitionData
    from qtbench.envs import layout

    def episode(success: bool) -> Episode:
        states = np.zeros((8, layout.STATE_DIM), np.float32)
        states[:, 0] = np.arange(8) * 0.05  # the gripper's x: its step index, in the state
        actions = np.tile(np.float32([1, 0, 0, -1]), (7, 1))
        if close_at is not None:
            actions[close_at - (not success):, 3] = 1.0
        if open_at is not None:
            actions[open_at + (not success):, 3] = -1.0
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


class ClosesBetween:
    """Follows the demos' motion, and commands ``held`` to the fingers from step ``start`` on
    and open again from step ``stop`` on (gripper x = step * 0.05)."""

    def __init__(self, start: int, stop: int = 99, held: float = 1.0):
        self.lo, self.hi, self.held = 0.05 * start - 0.01, 0.05 * stop - 0.01, held

    def act(self, window) -> np.ndarray:
        x = np.asarray(window.states[:, -1, 0])
        grip = np.where((x > self.lo) & (x < self.hi), self.held, -1.0)
        return np.stack([np.ones_like(x), 0 * x, 0 * x, grip], axis=1).astype(np.float32)


def test_switch_rows_are_the_demos_first_switched_steps_and_the_steps_before():
    data = toy_data(close_at=3, open_at=5)
    closing, before = switch_rows(data, to_closed=True)
    assert data.episode_ids[closing].tolist() == [0, 2] == data.episode_ids[before].tolist()  # demos only
    assert data.step_indices[closing].tolist() == [3, 3] and data.step_indices[before].tolist() == [2, 2]
    opening, before = switch_rows(data, to_closed=False)
    assert data.episode_ids[opening].tolist() == [0, 2] == data.episode_ids[before].tolist()
    assert data.step_indices[opening].tolist() == [5, 5] and data.step_indices[before].tolist() == [4, 4]
    assert [len(r) for r in switch_rows(toy_data(close_at=3), to_closed=False)] == [0, 0]  # never opened again
    assert [len(r) for r in switch_rows(toy_data(), to_closed=True)] == [0, 0]  # never closed: nothing to check


def toy_run(policy, data):
    from qtbench.algorithms import AlgoConfig

    return SimpleNamespace(algo_config=AlgoConfig(history=2), data=data, act=policy.act, run_dir="r",
                           config={"algo": "toy", "task": "pick_place"}, checkpoint_step=5)


@pytest.mark.parametrize("closes_from, shares", [(3, (1.0, 0.0)), (4, (0.0, 0.0)), (2, (1.0, 1.0))])
def test_the_policy_closing_at_the_demos_closing_step_or_not(closes_from, shares):
    result = agreement_run(toy_run(ClosesBetween(closes_from), toy_data(close_at=3)), progress=False)
    assert [(r["demo step"], r["transitions"], r["closes"]) for r in result["gripper"]] == [
        ("closing step", 2, shares[0]), ("step before closing", 2, shares[1])]
    closing = 100 * shares[0]
    assert f"| closing step | 2 | {closing:.1f} [{closing:.1f}, {closing:.1f}] |" in format_agreement(result)
    # never closes either
    assert "gripper" not in agreement_run(toy_run(SetsOffWrong(), toy_data()), progress=False)


def test_a_policy_that_holds_on_hedging_at_the_demos_release():
    """Closes with the demos, then commands 0.3 (part-closed: still holding) where they open."""
    result = agreement_run(toy_run(ClosesBetween(3, held=0.3), toy_data(close_at=3, open_at=5)), progress=False)
    rows = {r["demo step"]: r for r in result["gripper"]}
    assert list(rows) == ["closing step", "step before closing", "opening step", "step before opening"]
    assert (rows["opening step"]["closes"], rows["opening step"]["median_command"]) == (1.0, pytest.approx(0.3))
    assert (rows["step before closing"]["closes"], rows["step before closing"]["median_command"]) == (0.0, -1.0)
    assert "| opening step | 2 | 100.0 [100.0, 100.0] | +0.30 |" in format_agreement(result)
    released = agreement_run(toy_run(ClosesBetween(3, 5), toy_data(close_at=3, open_at=5)), progress=False)
    assert [r["closes"] for r in released["gripper"]] == [1.0, 0.0, 0.0, 1.0]
