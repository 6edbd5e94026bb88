"""Batched, deterministic evaluation of a policy on a task's instructions.

Episodes are jobs (instruction, reset seed), run in a fixed order over ``num_envs``
environment instances: whenever a slot's episode ends, the next job starts in that slot.
Every active slot acts in one batched ``act`` call per control step. The job list, the
slot assignment and the reset seeds depend only on the task, the episode count and the
seed, so the same weights give the same outcomes on every run.

We use our own batched loop rather than ``gymnasium.vector.SyncVectorEnv`` because each
slot needs its own pinned instruction and reset seed at every restart, and finished
slots must stay idle at the tail instead of auto-resetting into extra episodes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qtbench.algorithms.base import Window
from qtbench.results import EpisodeOutcome

log = logging.getLogger(__name__)

# Episodes per instruction when the caller gives none: 10 for a single skill (3-18
# instructions, so 30-420 episodes); 3 for "all" (66 instructions -> 198 episodes).
DEFAULT_EPISODES_PER_INSTRUCTION = 10
DEFAULT_EPISODES_PER_INSTRUCTION_ALL = 3
DEFAULT_NUM_ENVS = 32
# Episodes recorded as GIFs by --video (the first jobs, i.e. one per instruction first).
VIDEO_EPISODES = 3


def default_episodes(task: str) -> int:
    return DEFAULT_EPISODES_PER_INSTRUCTION_ALL if task == "all" else DEFAULT_EPISODES_PER_INSTRUCTION


@dataclass(frozen=True)
class EvalJob:
    instruction: str
    seed: int


def eval_jobs(instructions: list[str], episodes_per_instruction: int, seeds: Callable[[int], list[int]]) -> list[EvalJob]:
    """Jobs in round-robin order over instructions (so a partial run still covers every one).

    ``seeds(n)`` returns the n reset seeds to use (disjoint from the data seeds).
    """
    all_seeds = seeds(len(instructions) * episodes_per_instruction)
    jobs = []
    for rep in range(episodes_per_instruction):
        for i, text in enumerate(instructions):
            jobs.append(EvalJob(text, int(all_seeds[rep * len(instructions) + i])))
    return jobs


def _rows(window: Window, rows: np.ndarray) -> Window:
    return Window(*(getattr(window, f)[rows] for f in Window.__dataclass_fields__))


def run_episodes(
    act: Callable[[Window], np.ndarray],
    make_env: Callable[[], Any],
    jobs: list[EvalJob],
    history: int,
    num_envs: int = DEFAULT_NUM_ENVS,
    record: set[int] | None = None,
    progress: bool = True,
    target_return: float = 1.0,
    on_step: Callable[..., None] | None = None,
) -> tuple[list[EpisodeOutcome], dict[int, list[np.ndarray]]]:
    """Run ``jobs`` with batched ``act`` (numpy Window -> (B, A) actions).

    Returns one outcome per job (in job order) and, for the job indices in ``record``,
    the rendered frames of the episode. ``on_step(job_index, obs, action, reward,
    terminated, truncated)``, when given, sees every reset (action None) and every step
    (dataset collection keeps whole trajectories this way).
    """
    from tqdm import tqdm

    from qtbench.data import RolloutWindows
    from qtbench.envs.instructions import BY_TEXT

    record = record or set()
    n = max(1, min(num_envs, len(jobs)))
    envs = [make_env() for _ in range(n)]
    state_dim = envs[0].observation_space["state"].shape[0]
    action_dim = envs[0].action_space.shape[0]
    windows = RolloutWindows(n, history, state_dim, action_dim, target_return)
    slot_job = np.full(n, -1, dtype=np.int64)
    slot_len = np.zeros(n, dtype=np.int64)
    states = np.zeros((n, state_dim), np.float32)
    outcomes: list[EpisodeOutcome | None] = [None] * len(jobs)
    frames: dict[int, list[np.ndarray]] = {}
    next_job = 0

    def start(slots: list[int]) -> None:
        nonlocal next_job
        started, texts = [], []
        for slot in slots:
            if next_job >= len(jobs):
                slot_job[slot] = -1
                continue
            job = jobs[next_job]
            obs, _ = envs[slot].reset(seed=job.seed, options={"instruction": job.instruction})
            states[slot] = obs["state"]
            slot_job[slot], slot_len[slot] = next_job, 0
            if on_step is not None:
                on_step(next_job, obs, None, 0.0, False, False)
            if next_job in record:
                frames[next_job] = [envs[slot].render()]
            started.append(slot)
            texts.append(str(obs["instruction"]))
            next_job += 1
        if started:
            idx = np.array(started, dtype=np.int64)
            windows.start(idx, states[idx], texts)

    start(list(range(n)))
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress, leave=False)
    while (slot_job >= 0).any():
        active = np.flatnonzero(slot_job >= 0)
        actions = np.zeros((n, action_dim), np.float32)
        actions[active] = act(_rows(windows.window(), active))
        rewards = np.zeros(n, np.float32)
        finished = []
        for slot in active:
            obs, reward, terminated, truncated, info = envs[slot].step(actions[slot])
            states[slot] = obs["state"]
            rewards[slot] = reward
            slot_len[slot] += 1
            job_index = int(slot_job[slot])
            if on_step is not None:
                on_step(job_index, obs, actions[slot], reward, terminated, truncated)
            if job_index in frames:
                frames[job_index].append(envs[slot].render())
            if terminated or truncated:
                job = jobs[job_index]
                skill = info.get("skill") or BY_TEXT[job.instruction].skill
                outcomes[job_index] = EpisodeOutcome(
                    job.instruction, skill, bool(info.get("success", False)), int(slot_len[slot]), job.seed
                )
                finished.append(int(slot))
        windows.record(actions, rewards, states.copy())
        if finished:
            bar.update(len(finished))
            start(finished)
    bar.close()
    for env in envs:
        env.close()
    return [o for o in outcomes if o is not None], frames


def save_gif(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """An animated GIF of rendered frames (PIL ships with matplotlib: no extra dependency)."""
    from PIL import Image

    from qtbench.io import atomic_write

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    return atomic_write(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        ),
    )


def evaluate_policy(
    act: Callable[[Window], np.ndarray],
    task: str,
    history: int,
    episodes_per_instruction: int,
    seed: int,
    num_envs: int = DEFAULT_NUM_ENVS,
    video_dir: Path | None = None,
    progress: bool = True,
    target_return: float = 1.0,
) -> tuple[list[EpisodeOutcome], float]:
    """Evaluate on every instruction of ``task``; returns the outcomes and the seconds taken.

    With ``video_dir``, the first VIDEO_EPISODES episodes are also saved there as GIFs.
    """
    from qtbench.data import eval_seeds
    from qtbench.envs import make_env
    from qtbench.envs.instructions import instructions_for

    texts = [ins.text for ins in instructions_for(task)]
    jobs = eval_jobs(texts, episodes_per_instruction, lambda count: list(eval_seeds(count, seed)))
    record = set(range(min(VIDEO_EPISODES, len(jobs)))) if video_dir else set()
    kwargs = {"render_mode": "rgb_array"} if record else {}
    start = time.perf_counter()
    outcomes, frames = run_episodes(
        act, lambda: make_env(task, **kwargs), jobs, history, num_envs, record, progress, target_return
    )
    seconds = time.perf_counter() - start
    for job_index, episode in frames.items():
        out = outcomes[job_index]
        name = f"ep{job_index:02d}_{'success' if out.success else 'failure'}_{out.instruction.replace(' ', '_')}.gif"
        path = save_gif(Path(video_dir) / name, episode)
        log.info("saved video %s", path)
    return outcomes, seconds
