"""Autonomous episodes from a trained qtbench policy instead of the scripted collector.

The paper's autonomous data came from a learned policy (a BC policy) whose successful
episodes were thrown away. ``qtbench data generate --autonomous-policy <checkpoint>``
does the same with any checkpoint written by the training loop: the policy is rebuilt
through the Algorithm protocol (``algorithm_class`` + ``load_state_dict``) and driven
greedily in a batch of environments with :class:`RolloutWindows`.

Collection runs in rounds: each round starts, for every instruction, as many attempts
as failures are still missing (attempt indices continue where the last round stopped),
so which episodes are kept depends only on the seeds, not on batching.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtbench.data.profiles import episode_seed
from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

DEFAULT_NUM_ENVS = 16


@dataclass
class TrainedPolicy:
    """A trained algorithm ready to act, and where it came from (for the manifest)."""

    algorithm: Any
    algo: str
    history: int
    checkpoint: str
    step: int
    device: str = "cpu"

    def describe(self) -> dict[str, Any]:
        return {"algo": self.algo, "checkpoint": self.checkpoint, "step": self.step}

    def act(self, window: Any) -> np.ndarray:
        return np.asarray(self.algorithm.act(window.to_torch(self.device)), np.float32)


def load_trained_policy(checkpoint: str | Path, task: str, device: str = "cpu") -> TrainedPolicy:
    """Rebuild the policy stored in a training checkpoint (its directory or its last.pt).

    The model is sized from the dataset it was trained on (``config.dataset`` of ``task``),
    exactly as the training loop sized it, so that dataset must still be present.
    """
    from qtbench import checkpoint as ckpt
    from qtbench.algorithms import algorithm_class
    from qtbench.data.transitions import TransitionData
    from qtbench.train import resolve_config

    path = Path(checkpoint)
    directory = path.parent if path.is_file() else path
    state = ckpt.load(directory)
    if state is None:
        raise QtbenchError(
            f"no training checkpoint at {path}",
            "train a policy first (e.g. `qtbench run --algo bc --task <task>`) and pass its "
            f"checkpoint directory (…/<task>/<algo>/seed<k>/) or its {ckpt.CHECKPOINT_FILE}",
        )
    cls = algorithm_class(state.algo)
    config = resolve_config(cls.config_class, dict(state.algo_config))
    spec = TransitionData.load(task, config.dataset).spec_info()
    algorithm = cls(spec, config, device=device)
    algorithm.load_state_dict(state.algorithm)
    log.info("collecting with %s from %s (step %d)", state.algo, directory, state.step)
    return TrainedPolicy(algorithm, state.algo, int(config.history), str(directory), int(state.step), device)


def rollout_batch(policy: TrainedPolicy, envs: list[Any], jobs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Run (instruction, seed) jobs, one per env, to their ends; one episode dict per job."""
    from qtbench.data.rollout_windows import RolloutWindows

    n = len(jobs)
    state_dim = envs[0].observation_space["state"].shape[0]
    low, high = envs[0].action_space.low, envs[0].action_space.high
    windows = RolloutWindows(n, policy.history, state_dim, envs[0].action_space.shape[0])
    episodes: list[dict[str, list]] = []
    first = np.zeros((n, state_dim), np.float32)
    for slot, (text, seed) in enumerate(jobs):
        obs, _ = envs[slot].reset(seed=seed, options={"instruction": text})
        first[slot] = obs["state"]
        episodes.append(dict(states=[obs["state"]], actions=[], rewards=[], terminations=[], truncations=[]))
    windows.start(np.arange(n), first, [text for text, _ in jobs])
    active = np.ones(n, bool)
    while active.any():
        actions = np.clip(policy.act(windows.window()), low, high).astype(np.float32)
        rewards = np.zeros(n, np.float32)
        next_states = windows.states[:, -1].copy()
        for slot in np.flatnonzero(active):
            obs, reward, terminated, truncated, _ = envs[slot].step(actions[slot])
            ep = episodes[slot]
            ep["states"].append(obs["state"])
            ep["actions"].append(actions[slot])
            ep["rewards"].append(reward)
            ep["terminations"].append(terminated)
            ep["truncations"].append(truncated)
            rewards[slot], next_states[slot] = reward, obs["state"]
            active[slot] = not (terminated or truncated)
        windows.record(actions, rewards, next_states)
    return [
        dict(
            states=np.asarray(ep["states"], np.float32),
            instruction=text,
            actions=np.asarray(ep["actions"], np.float32),
            rewards=np.asarray(ep["rewards"], np.float32),
            terminations=np.asarray(ep["terminations"], bool),
            truncations=np.asarray(ep["truncations"], bool),
            seed=seed,
        )
        for ep, (text, seed) in zip(episodes, jobs)
    ]


def collect_with_policy(units: list[Any], policy: TrainedPolicy, num_envs: int = DEFAULT_NUM_ENVS,
                        progress: bool = True) -> list[Any]:
    """Fill failure ``units`` (see generate.Unit) with the policy's failed episodes."""
    from tqdm import tqdm

    from qtbench.data.generate import UnitResult, keep
    from qtbench.envs import make_env

    results = [UnitResult(unit) for unit in units]
    total = sum(u.target for u in units)
    envs = [make_env(units[0].task) for _ in range(min(num_envs, total))] if units else []
    num_envs = max(1, len(envs))
    bar = tqdm(total=total, unit="ep", desc="collecting (policy)", disable=not progress)
    try:
        while True:
            jobs = []  # (result, attempt index) in a fixed order
            for res in results:
                missing = min(res.unit.target - len(res.episodes), res.unit.max_attempts - res.attempts)
                jobs += [(res, res.attempts + i) for i in range(max(0, missing))]
            if not jobs:
                break
            for start in range(0, len(jobs), num_envs):
                chunk = jobs[start:start + num_envs]
                seeds = [
                    (r.unit.instruction,
                     episode_seed(r.unit.task, r.unit.profile, r.unit.seed, r.unit.split, r.unit.instruction, a))
                    for r, a in chunk
                ]
                for (res, _), episode in zip(chunk, rollout_batch(policy, envs[: len(chunk)], seeds)):
                    res.attempts += 1
                    if keep(res.unit.split, episode):
                        res.episodes.append(episode)
                        bar.update(1)
                    else:
                        res.discarded += 1
    finally:
        bar.close()
    return results
