"""Observation windows of running evaluation episodes, in the sampler's layout.

Each of ``num_envs`` slots holds the last ``history`` steps of its episode. The current
step's action row is zero (the policy is about to choose it) and its return-to-go is the
target return minus the rewards received so far, as Decision Transformer expects.
"""

from __future__ import annotations

import numpy as np

from qtbench.algorithms.base import Window
from qtbench.envs.instructions import MAX_TOKENS, tokenize_many


class RolloutWindows:
    """Rolling per-environment windows for batched ``Algorithm.act`` calls."""

    def __init__(self, num_envs: int, history: int, state_dim: int, action_dim: int, target_return: float = 1.0):
        self.history = history
        self.target_return = float(target_return)
        self.states = np.zeros((num_envs, history, state_dim), np.float32)
        self.mask = np.zeros((num_envs, history), bool)
        self.instruction = np.zeros((num_envs, MAX_TOKENS), np.int64)
        self.actions = np.zeros((num_envs, history, action_dim), np.float32)
        self.returns_to_go = np.zeros((num_envs, history), np.float32)
        self.timesteps = np.zeros((num_envs, history), np.int64)

    def start(self, indices: np.ndarray, states: np.ndarray, instructions: list[str]) -> None:
        """Begin new episodes in slots ``indices`` from their first states."""
        idx = np.asarray(indices, dtype=np.int64)
        for arr in (self.states, self.mask, self.actions, self.returns_to_go, self.timesteps):
            arr[idx] = 0
        self.states[idx, -1] = states
        self.mask[idx, -1] = True
        self.returns_to_go[idx, -1] = self.target_return
        self.instruction[idx] = tokenize_many(list(instructions))

    def window(self) -> Window:
        """A copy of every slot's window (B = num_envs)."""
        return Window(
            states=self.states.copy(),
            mask=self.mask.copy(),
            instruction=self.instruction.copy(),
            actions=self.actions.copy(),
            returns_to_go=self.returns_to_go.copy(),
            timesteps=self.timesteps.copy(),
        )

    def record(self, actions: np.ndarray, rewards: np.ndarray, next_states: np.ndarray) -> None:
        """Advance every slot one step: store the action taken, shift, append s_{t+1}."""
        self.actions[:, -1] = actions
        last_rtg = self.returns_to_go[:, -1] - np.asarray(rewards, np.float32)
        last_t = self.timesteps[:, -1] + 1
        for arr in (self.states, self.mask, self.actions, self.returns_to_go, self.timesteps):
            arr[:, :-1] = arr[:, 1:]
        self.states[:, -1] = next_states
        self.mask[:, -1] = True
        self.actions[:, -1] = 0.0
        self.returns_to_go[:, -1] = last_rtg
        self.timesteps[:, -1] = last_t
