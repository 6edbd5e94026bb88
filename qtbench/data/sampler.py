"""Vectorised sampling of training windows and their n-step bootstrap targets.

Everything that depends on ``gamma`` and ``n_step`` is computed once per step in
``__init__``; ``sample`` is fancy indexing only (no Python loop over transitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qtbench.algorithms.base import Batch, Window
from qtbench.data.transitions import TransitionData


@dataclass(frozen=True)
class StepTargets:
    """Per-transition targets for one (gamma, n_step) setting."""

    mc_return: np.ndarray  # (N,) float32  sum_k gamma^k r_{t+k}
    nstep_return: np.ndarray  # (N,) float32  sum_{k<m} gamma^k r_{t+k}
    next_obs_rows: np.ndarray  # (N,) int64 observation row of s_{t+m}
    bootstrap_discount: np.ndarray  # (N,) float32  gamma^m, 0 if the episode ended within the m steps


def step_targets(
    data: TransitionData, n_step: int, gamma: float, timeout_is_terminal: bool = False
) -> StepTargets:
    """Monte-Carlo and n-step targets of every transition, m = min(n_step, steps left).

    The bootstrap is cut where the episode terminated within the m steps, and also where
    it was truncated if ``timeout_is_terminal`` (the attempt is over and scored as is).
    """
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")
    rewards = data.padded_rewards  # (E, T_max), zero past each episode's end
    num_eps, t_max = rewards.shape
    mc = np.zeros_like(rewards)
    running = np.zeros(num_eps)
    for k in range(t_max - 1, -1, -1):  # over time, vectorised over episodes
        running = rewards[:, k] + gamma * running
        mc[:, k] = running
    e, t = data.episode_ids, data.step_indices
    steps_left = data.episode_lengths[e] - t
    m = np.minimum(n_step, steps_left)
    nstep = np.zeros(len(e))
    for k in range(n_step):  # zero padding makes steps beyond the episode's end contribute 0
        cols = np.minimum(t + k, t_max - 1)
        nstep += np.where(k < m, gamma**k * rewards[e, cols], 0.0)
    # Every episode ends in a termination or a truncation, so with timeout_is_terminal all do.
    cut_at_end = data.episode_terminated | timeout_is_terminal
    terminal_within = (m == steps_left) & cut_at_end[e]
    discount = np.where(terminal_within, 0.0, gamma ** m.astype(np.float64))
    return StepTargets(
        mc_return=mc[e, t].astype(np.float32),
        nstep_return=nstep.astype(np.float32),
        next_obs_rows=data.obs_rows + m,
        bootstrap_discount=discount.astype(np.float32),
    )


class WindowSampler:
    """Uniform batches of transitions, each with the ``history`` window ending at s_t and
    the window ending at s_{t+m}, in the layout of :class:`qtbench.algorithms.base.Batch`."""

    def __init__(
        self, data: TransitionData, history: int, n_step: int, gamma: float, timeout_is_terminal: bool = False
    ):
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.data = data
        self.history = history
        self.n_step = n_step
        self.gamma = gamma
        self.targets = step_targets(data, n_step, gamma, timeout_is_terminal)
        self._offsets = np.arange(-history + 1, 1, dtype=np.int64)  # (H,) ending at 0

    def window(self, obs_rows: np.ndarray) -> Window:
        """Windows ending at the given observation rows; rows before the episode's start
        are zero with mask False (timestep 0)."""
        d = self.data
        timesteps = d.obs_timestep[obs_rows][:, None] + self._offsets  # (B, H)
        mask = timesteps >= 0
        rows = np.where(mask, obs_rows[:, None] + self._offsets, 0)
        states = d.states[rows] * mask[..., None]
        actions = d.obs_actions[rows] * mask[..., None]
        rtg = d.obs_returns_to_go[rows] * mask
        return Window(
            states=states.astype(np.float32, copy=False),
            mask=mask,
            instruction=d.instruction_tokens[d.obs_episode[obs_rows]],
            actions=actions.astype(np.float32, copy=False),
            returns_to_go=rtg.astype(np.float32, copy=False),
            timesteps=np.where(mask, timesteps, 0),
        )

    def acting_window(self, obs_rows: np.ndarray) -> Window:
        """``window`` as a policy sees it when it acts: the current step's action row zeroed,
        since that action is not taken yet (the diagnostics score the data's states this way)."""
        window = self.window(obs_rows)
        window.actions[:, -1] = 0.0
        return window

    def batch(self, indices: np.ndarray) -> Batch:
        """The batch of the given transition indices (0 <= i < num_transitions)."""
        d, tg = self.data, self.targets
        return Batch(
            window=self.window(d.obs_rows[indices]),
            reward=d.rewards[indices],
            mc_return=tg.mc_return[indices],
            nstep_return=tg.nstep_return[indices],
            next_window=self.window(tg.next_obs_rows[indices]),
            bootstrap_discount=tg.bootstrap_discount[indices],
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        return self.batch(rng.integers(0, self.data.num_transitions, size=batch_size))
