"""A dataset read once into flat numpy arrays (Minari has no transition-level sampling).

Two row spaces:

* observation rows (M = sum of (T_e + 1)): every observation of every episode, including
  each episode's final observation, so s_{t+1} of the last step exists;
* transition rows (N = sum of T_e): one per (s_t, a_t, r_t) step.

Per-step quantities that only depend on the data (undiscounted return-to-go, step index,
episode id) are computed here once; the sampler adds the gamma / n-step dependent ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from qtbench.algorithms.base import EnvSpecInfo
from qtbench.data.episode import Episode
from qtbench.envs.instructions import MAX_TOKENS, VOCABULARY, tokenize_many

log = logging.getLogger(__name__)

# Features whose standard deviation is below this are not rescaled (std reported as 1).
MIN_STATE_STD = 1e-6


@dataclass
class TransitionData:
    """Flat arrays of one dataset; build with :meth:`load` or :meth:`from_episodes`."""

    # observation rows
    states: np.ndarray  # (M, S) float32
    obs_episode: np.ndarray  # (M,) int64 episode of each observation row
    obs_timestep: np.ndarray  # (M,) int64 step index within the episode (T_e for the final one)
    obs_actions: np.ndarray  # (M, A) float32 action taken at that observation (zero at the final one)
    obs_returns_to_go: np.ndarray  # (M,) float32 undiscounted sum of rewards from there on (0 at the final one)
    # transition rows
    obs_rows: np.ndarray  # (N,) int64 row of s_t in ``states`` (s_{t+1} is the next row)
    actions: np.ndarray  # (N, A) float32
    rewards: np.ndarray  # (N,) float32
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    episode_ids: np.ndarray  # (N,) int64
    step_indices: np.ndarray  # (N,) int64
    # episodes
    episode_starts: np.ndarray  # (E,) int64 first observation row
    episode_lengths: np.ndarray  # (E,) int64 number of transitions T_e
    episode_terminated: np.ndarray  # (E,) bool: the episode ended in a true terminal state
    instructions: list[str]  # (E,) instruction text of each episode
    instruction_tokens: np.ndarray  # (E, MAX_TOKENS) int64 token ids
    padded_rewards: np.ndarray  # (E, T_max) float64, zero after each episode's end
    max_episode_steps: int
    source: str = ""  # the dataset id it came from, for messages

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_episodes(
        cls,
        episodes: Iterable[Episode],
        max_episode_steps: int | None = None,
        source: str = "",
    ) -> "TransitionData":
        """Build from episodes (see :class:`~qtbench.data.episode.Episode`)."""
        episodes = list(episodes)
        if not episodes:
            raise ValueError(f"no episodes to build transitions from ({source or 'in memory'})")
        lengths = np.array([ep.length for ep in episodes], dtype=np.int64)
        for ep, length in zip(episodes, lengths):
            if length < 1 or len(ep.states) != length + 1 or len(ep.actions) != length:
                raise ValueError(
                    f"malformed episode in {source or 'input'}: {length} rewards, "
                    f"{len(ep.states)} observations, {len(ep.actions)} actions"
                )
        states = np.concatenate([np.asarray(ep.states, np.float32) for ep in episodes])
        actions = np.concatenate([np.asarray(ep.actions, np.float32) for ep in episodes])
        rewards = np.concatenate([np.asarray(ep.rewards, np.float32) for ep in episodes])
        terms = np.concatenate([np.asarray(ep.terminations, bool) for ep in episodes])
        truncs = np.concatenate([np.asarray(ep.truncations, bool) for ep in episodes])
        num_eps = len(episodes)
        obs_lengths = lengths + 1
        episode_starts = np.concatenate([[0], np.cumsum(obs_lengths)[:-1]]).astype(np.int64)
        obs_episode = np.repeat(np.arange(num_eps, dtype=np.int64), obs_lengths)
        obs_timestep = np.arange(len(states), dtype=np.int64) - episode_starts[obs_episode]
        is_final = obs_timestep == lengths[obs_episode]
        obs_rows = np.flatnonzero(~is_final).astype(np.int64)
        episode_ids = obs_episode[obs_rows]
        step_indices = obs_timestep[obs_rows]

        obs_actions = np.zeros((len(states), actions.shape[1]), np.float32)
        obs_actions[obs_rows] = actions
        # Undiscounted return-to-go: reverse cumulative sum along each episode's row.
        padded = np.zeros((len(episodes), int(lengths.max())), np.float64)
        padded[episode_ids, step_indices] = rewards
        rtg = np.cumsum(padded[:, ::-1], axis=1)[:, ::-1][episode_ids, step_indices].astype(np.float32)
        obs_rtg = np.zeros(len(states), np.float32)
        obs_rtg[obs_rows] = rtg

        texts = [str(ep.instruction) for ep in episodes]
        longest = int(lengths.max())
        return cls(
            states=states,
            obs_episode=obs_episode,
            obs_timestep=obs_timestep,
            obs_actions=obs_actions,
            obs_returns_to_go=obs_rtg,
            obs_rows=obs_rows,
            actions=actions,
            rewards=rewards,
            terminations=terms,
            truncations=truncs,
            episode_ids=episode_ids,
            step_indices=step_indices,
            episode_starts=episode_starts,
            episode_lengths=lengths,
            episode_terminated=terms[np.cumsum(lengths) - 1],
            instructions=texts,
            instruction_tokens=tokenize_many(texts),
            max_episode_steps=int(max(max_episode_steps or 0, longest)),
            source=source,
            padded_rewards=padded,
        )

    @classmethod
    def load(cls, task: str, split: str, successful_only: bool = False, profile: str = "default",
             source: str = "bc", demo_styles: tuple[str, ...] = ()) -> "TransitionData":
        """Read one dataset of ``task`` (verifying its content hash) into flat arrays: the
        ``split`` of that ``profile`` and failure ``source`` (see qtbench.data.store.DatasetName).

        ``successful_only`` keeps the episodes with a positive return (demonstrations
        inside the mixed dataset, for behaviour cloning). ``demo_styles`` (style names or
        robust / fragile, one per skill of the task) drops the demonstrations of other styles.
        """
        from qtbench.data.store import dataset_id, read_dataset

        stored = read_dataset(dataset_id(task, split, profile, source), verify=True)
        episodes = stored.episodes
        if demo_styles:
            episodes = keep_demo_styles(episodes, demo_styles, stored.dataset_id)
        if successful_only:
            episodes = [ep for ep in episodes if ep.succeeded]
            if not episodes:
                from qtbench.errors import QtbenchError

                raise QtbenchError(
                    f"dataset {stored.dataset_id} has no successful episode",
                    "use the demos or mixed split, or regenerate the data",
                )
        data = cls.from_episodes(episodes, stored.max_episode_steps, source=stored.dataset_id)
        log.info(
            "loaded %s: %d episodes, %d transitions", stored.dataset_id, data.num_episodes, data.num_transitions
        )
        return data

    # ---- summaries -----------------------------------------------------------------
    @property
    def num_transitions(self) -> int:
        return int(len(self.obs_rows))

    @property
    def num_episodes(self) -> int:
        return int(len(self.episode_lengths))

    @property
    def episode_succeeded(self) -> np.ndarray:
        """(E,) bool: episodes with a positive return (a mixed dataset's demonstrations)."""
        return self.padded_rewards.sum(1) > 0

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def spec_info(self) -> EnvSpecInfo:
        """Sizes for a model, with the per-feature mean/std of every observation row."""
        mean = self.states.mean(axis=0, dtype=np.float64)
        std = self.states.std(axis=0, dtype=np.float64)
        std = np.where(std < MIN_STATE_STD, 1.0, std)
        return EnvSpecInfo(
            state_dim=self.state_dim,
            action_dim=self.action_dim,
            vocab_size=len(VOCABULARY),
            max_tokens=MAX_TOKENS,
            max_episode_steps=self.max_episode_steps,
            state_mean=tuple(float(x) for x in mean),
            state_std=tuple(float(x) for x in std),
        )


def keep_demo_styles(episodes: list[Episode], styles: tuple[str, ...], source: str) -> list[Episode]:
    """``episodes`` without the demonstrations (positive return) whose style is not in ``styles``."""
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.envs.policies import pick_style
    from qtbench.errors import QtbenchError

    demos = [ep for ep in episodes if ep.succeeded]
    if any(not ep.style for ep in demos):
        raise QtbenchError(f"dataset {source} does not record the style of its demonstrations",
                           "regenerate it with this version (qtbench data generate), or drop demo_styles")
    wanted = {skill: pick_style(skill, styles) for skill in {BY_TEXT[ep.instruction].skill for ep in demos}}
    kept = [ep for ep in episodes if not ep.succeeded or ep.style == wanted[BY_TEXT[ep.instruction].skill]]
    if len(kept) == len(episodes) - len(demos):
        raise QtbenchError(f"dataset {source} has no demonstration of styles {','.join(styles)}",
                           "name styles its manifest counts (per_style)")
    log.info("demo_styles %s: kept %d of %d demonstrations", ",".join(styles), len(kept) - len(episodes) + len(demos),
             len(demos))
    return kept
