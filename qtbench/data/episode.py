"""One episode as the datasets store it: what collection produces, the store writes and
reads back, the content hash covers and the training view concatenates.

An episode of T steps holds T+1 observations (the reset state, then one per step) and T
actions, rewards, terminations and truncations, as Minari stores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Episode:
    """One episode's arrays and where it came from."""

    instruction: str  # the language instruction pinned at reset
    states: np.ndarray  # (T+1, state_dim) float32: the reset state, then the state after each step
    actions: np.ndarray  # (T, action_dim) float32: the (clipped) actions taken
    rewards: np.ndarray  # (T,) float32
    terminations: np.ndarray  # (T,) bool: the task ended (success)
    truncations: np.ndarray  # (T,) bool: the time limit ended it
    seed: int | None = None  # the reset seed (None: not recorded, e.g. read back from Minari)
    style: str | None = None  # the scripted demonstrator's style (None for a learned policy's episode)
    # The instruction text of every observation as stored (None: ``instruction`` at each one).
    instructions: tuple[str, ...] | None = None

    @classmethod
    def from_steps(cls, instruction: str, seed: int | None, states: Sequence, actions: Sequence,
                   rewards: Sequence, terminations: Sequence, truncations: Sequence,
                   style: str | None = None) -> "Episode":
        """An episode from its per-step lists (``states`` has one more row than the others),
        in the dtypes a dataset stores; a RuntimeError for a non-finite state (an unstable
        simulation must not enter a dataset silently)."""
        states = np.asarray(states, np.float32)
        if not np.isfinite(states).all():
            raise RuntimeError(f"non-finite state in the episode of {instruction!r} with reset seed {seed}")
        return cls(instruction, states, np.asarray(actions, np.float32), np.asarray(rewards, np.float32),
                   np.asarray(terminations, bool), np.asarray(truncations, bool), seed, style)

    @property
    def length(self) -> int:
        """Number of steps T."""
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards))

    @property
    def succeeded(self) -> bool:
        """Any reward at all (the tasks' only reward is 1 at the successful last step)."""
        return self.total_reward > 0

    def observation_texts(self) -> list[str]:
        """The instruction of every observation (T+1 entries)."""
        return list(self.instructions) if self.instructions else [self.instruction] * len(self.states)


def summarize(episodes: list[Episode]) -> dict[str, Any]:
    """Counts a manifest and `qtbench data info` report: episodes, steps, successes,
    mean length, per-instruction and per-style counts (in first-seen order)."""
    lengths = np.array([ep.length for ep in episodes], dtype=np.int64)
    success = np.array([ep.succeeded for ep in episodes], dtype=bool)
    per_instruction: dict[str, int] = {}
    per_style: dict[str, int] = {}  # the scripted policies' styles (episodes without one left out)
    for ep in episodes:
        per_instruction[ep.instruction] = per_instruction.get(ep.instruction, 0) + 1
        if ep.style:
            per_style[ep.style] = per_style.get(ep.style, 0) + 1
    return {
        "episodes": int(len(episodes)),
        "steps": int(lengths.sum()),
        "successes": int(success.sum()),
        "success_fraction": float(success.mean()) if len(episodes) else 0.0,
        "mean_episode_length": float(lengths.mean()) if len(episodes) else 0.0,
        "per_instruction": per_instruction,
        "per_style": per_style,
    }
