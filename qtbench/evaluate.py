"""Batched, deterministic evaluation of a policy on a task's instructions.

Episodes are jobs (instruction, reset seed), run in a fixed order over ``num_envs``
environment instances: whenever a slot's episode ends, the next job starts in that slot.
Every active slot acts in one batched ``act`` call per control step. The job list, the
slot assignment and the reset seeds depend only on the task, the episode count and the
seed, so the same weights give the same outcomes on every run.

We use our own batched loop rather than ``gymnasium.vector.SyncVectorEnv`` because each
slot needs its own pinned instruction and reset seed at every restart, and finished
slots must stay idle at the tail instead of auto-resetting into extra episodes.

Every episode's progress through its skill's stages (``qtbench.envs.skill``) is tracked
from the observed states, so each outcome carries its furthest stage; its states are also
kept until it ends, to score where its fingers first closed and which demonstrator style it
attempted (``qtbench.envs.attempts``). With ``handover``
the same loop evaluates from a stage: the scripted demo policy (seeded from the episode's
reset seed, so every algorithm sees the same demo prefix) drives each episode until the
stage is passed, then the learned policy acts for the rest of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qtbench.algorithms.base import Window
from qtbench.data.episode import Episode
from qtbench.envs.instructions import MULTI_TASK
from qtbench.results import EpisodeOutcome

log = logging.getLogger(__name__)

# Episodes per instruction when the caller gives none, sized for power: 100 for a single
# skill (drawer_open: 300 episodes, so one run's 95% Wilson interval is at most +-5.7
# points; move_near: 4200), 10 for "all" (66 instructions -> 660 episodes, 30-420 per
# skill). The reset seeds depend only on the run seed (``qtbench.data.eval_seeds``), not
# on the algorithm: every algorithm with run seed k meets the same episodes, so
# comparisons across algorithms at the same seed are paired.
DEFAULT_EPISODES_PER_INSTRUCTION = 100
DEFAULT_EPISODES_PER_INSTRUCTION_ALL = 10
DEFAULT_NUM_ENVS = 32
# Episodes recorded as GIFs by --video (the first jobs, i.e. one per instruction first).
VIDEO_EPISODES = 3


def default_episodes(task: str) -> int:
    return DEFAULT_EPISODES_PER_INSTRUCTION_ALL if task == MULTI_TASK else DEFAULT_EPISODES_PER_INSTRUCTION


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


# Salt of the demo policy's generator in hand-over episodes (its seed is [reset seed, salt]).
HANDOVER_SEED_SALT = 0xD3A0


def handover_stage_index(skill: str, stage: str) -> int:
    """Index of ``stage`` among ``skill``'s stages; a hand-over needs an intermediate one."""
    from qtbench.envs.base import SKILLS_BY_NAME
    from qtbench.errors import QtbenchError

    names = SKILLS_BY_NAME[skill].stage_names
    if stage not in names[:-1]:
        raise QtbenchError(
            f"{skill} has no stage {stage!r} to hand over from",
            f"choose one of {', '.join(names[:-1])} (the last stage, {names[-1]!r}, is success itself)",
        )
    return names.index(stage)


def handover_instructions(task: str, stage: str) -> list[str]:
    """The instructions of ``task`` whose skill has ``stage`` to hand over from (on task
    ``all``, e.g. ``grasped`` selects the pick_place and move_near instructions)."""
    from qtbench.envs.base import SKILLS_BY_NAME
    from qtbench.envs.instructions import instructions_for
    from qtbench.errors import QtbenchError

    texts = [ins.text for ins in instructions_for(task) if stage in SKILLS_BY_NAME[ins.skill].stage_names[:-1]]
    if not texts:
        skills = dict.fromkeys(ins.skill for ins in instructions_for(task))
        choices = "; ".join(f"{s}: {', '.join(SKILLS_BY_NAME[s].stage_names[:-1])}" for s in skills)
        raise QtbenchError(f"no skill of task {task} has a stage {stage!r} to hand over from",
                           f"choose one of the stages before success ({choices})")
    return texts


class EpisodeRecorder:
    """An ``on_step`` callback of :func:`run_episodes` that keeps every job's whole episode
    (dataset collection stores them)."""

    def __init__(self, jobs: list[EvalJob]):
        self.jobs = jobs
        self.steps: list[dict[str, list]] = [{} for _ in jobs]

    def __call__(self, job: int, obs: Any, action: Any, reward: float, terminated: bool, truncated: bool) -> None:
        lists = self.steps[job]
        if action is None:  # a reset
            lists.update(states=[obs["state"]], actions=[], rewards=[], terms=[], truncs=[])
            return
        lists["states"].append(obs["state"])
        for key, value in (("actions", action), ("rewards", reward), ("terms", terminated), ("truncs", truncated)):
            lists[key].append(value)

    def episodes(self) -> list[Episode]:
        """The recorded episodes, in job order (after the run)."""
        return [Episode.from_steps(job.instruction, job.seed, lists["states"], lists["actions"], lists["rewards"],
                                   lists["terms"], lists["truncs"]) for job, lists in zip(self.jobs, self.steps)]


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
    handover: str | None = None,
    track_stages: bool = True,
    on_step: Callable[..., None] | None = None,
) -> tuple[list[EpisodeOutcome], dict[int, list[np.ndarray]]]:
    """Run ``jobs`` with batched ``act`` (numpy Window -> (B, A) actions).

    Returns one outcome per job (in job order) and, for the job indices in ``record``,
    the rendered frames of the episode. With ``handover`` (a stage name), the demo policy
    acts until that stage is passed and ``act`` from then on; an outcome's
    ``handover_step`` says when (None: the demo never got there). ``track_stages=False``
    skips the stages (for environments without qtbench's state layout). ``on_step(job_index,
    obs, action, reward, terminated, truncated)``, when given, sees every reset (action None) and every step
    (dataset collection keeps whole trajectories this way, with :class:`EpisodeRecorder`).
    """
    from tqdm import tqdm

    from qtbench.data import RolloutWindows
    from qtbench.envs.attempts import NO_ATTEMPT, attempted_style, first_closure, how_it_ended
    from qtbench.envs.base import SKILLS_BY_NAME
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.envs.policies import make_policy
    from qtbench.envs.skill import StageProgress

    handover_at = {}  # skill -> number of stages passed at which the learned policy takes over
    if handover is not None:
        for skill in {BY_TEXT[job.instruction].skill for job in jobs}:
            handover_at[skill] = handover_stage_index(skill, handover) + 1

    record = record or set()
    n = max(1, min(num_envs, len(jobs)))
    envs = [make_env() for _ in range(n)]
    state_dim = envs[0].observation_space["state"].shape[0]
    action_dim = envs[0].action_space.shape[0]
    windows = RolloutWindows(n, history, state_dim, action_dim, target_return)
    slot_job = np.full(n, -1, dtype=np.int64)
    slot_len = np.zeros(n, dtype=np.int64)
    states = np.zeros((n, state_dim), np.float32)
    observations: list[dict] = [{} for _ in range(n)]
    stages: list[StageProgress | None] = [None] * n
    # each slot's observed states, to score where its episode first closed the fingers and which
    # demonstrator style it attempted (None: not scored, after a demo prefix or without stages)
    trajectories: list[list[np.ndarray] | None] = [None] * n
    drivers: list[Any] = [None] * n  # the demo policy of a slot until it hands over
    handed_at: list[int | None] = [None] * n
    outcomes: list[EpisodeOutcome | None] = [None] * len(jobs)
    frames: dict[int, list[np.ndarray]] = {}
    next_job = 0

    def hand_over_if_passed(slot: int) -> None:
        if drivers[slot] is not None and stages[slot].passed >= handover_at[stages[slot].skill.name]:
            drivers[slot], handed_at[slot] = None, int(slot_len[slot])

    def start(slots: list[int]) -> None:
        nonlocal next_job
        started, texts = [], []
        for slot in slots:
            if next_job >= len(jobs):
                slot_job[slot] = -1
                continue
            job = jobs[next_job]
            obs, info = envs[slot].reset(seed=job.seed, options={"instruction": job.instruction})
            states[slot], observations[slot] = obs["state"], obs
            slot_job[slot], slot_len[slot] = next_job, 0
            ins = BY_TEXT[job.instruction]
            if track_stages or handover is not None:
                stages[slot] = StageProgress(SKILLS_BY_NAME[ins.skill], ins)
                stages[slot].update(obs["state"])
                if handover is None:  # after a demo prefix, the closure and the style are the demo's
                    trajectories[slot] = [obs["state"]]
            drivers[slot], handed_at[slot] = None, None
            if handover is not None:
                drivers[slot] = make_policy("demo", envs[slot], np.random.default_rng([job.seed, HANDOVER_SEED_SALT]))
                drivers[slot].reset(obs, info)
                hand_over_if_passed(slot)
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
        learned = np.array([s for s in active if drivers[s] is None], dtype=np.int64)
        actions = np.zeros((n, action_dim), np.float32)
        if len(learned):
            actions[learned] = act(_rows(windows.window(), learned))
        for slot in active:
            if drivers[slot] is not None:
                actions[slot] = drivers[slot].act(observations[slot])
        rewards = np.zeros(n, np.float32)
        finished = []
        for slot in active:
            obs, reward, terminated, truncated, info = envs[slot].step(actions[slot])
            states[slot], observations[slot] = obs["state"], obs
            rewards[slot] = reward
            slot_len[slot] += 1
            if stages[slot] is not None:
                stages[slot].update(obs["state"], bool(info.get("success", False)))
            if trajectories[slot] is not None:
                trajectories[slot].append(obs["state"])
            job_index = int(slot_job[slot])
            if on_step is not None:
                on_step(job_index, obs, actions[slot], reward, terminated, truncated)
            if job_index in frames:
                frames[job_index].append(envs[slot].render())
            if terminated or truncated:
                job = jobs[job_index]
                ins, trajectory = BY_TEXT[job.instruction], trajectories[slot]
                skill = info.get("skill") or ins.skill
                closure = first_closure(ins, trajectory) if trajectory is not None else None
                style = (attempted_style(ins, trajectory) or NO_ATTEMPT) if trajectory is not None else None
                success = bool(info.get("success", False))
                ending = how_it_ended(ins, trajectory) if trajectory is not None and not success else None
                outcomes[job_index] = EpisodeOutcome(
                    job.instruction, skill, success, int(slot_len[slot]), job.seed,
                    furthest_stage=stages[slot].furthest if stages[slot] is not None else None,
                    handover_step=handed_at[slot],
                    first_closure=closure.verdict if closure is not None else None,
                    closure_offset=closure.offset if closure is not None else None,
                    attempted_style=style, ending=ending,
                )
                finished.append(int(slot))
            else:
                hand_over_if_passed(slot)
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

    from qtbench.atomic import atomic_write

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
    handover: str | None = None,
    horizons: dict[str, int] | None = None,
) -> tuple[list[EpisodeOutcome], float]:
    """Evaluate on every instruction of ``task``; returns the outcomes and the seconds taken.

    The episodes are the first ``episodes_per_instruction`` rounds of the run seed's
    evaluation jobs: fewer episodes give a prefix of the same job list (the learning
    curve evaluates such a fixed subset). With ``video_dir``, the first VIDEO_EPISODES episodes are also saved there as GIFs.
    With ``handover`` (a stage name), the demo policy drives each episode to that stage
    first (see ``run_episodes``), on the instructions whose skill has that stage; on a
    single-skill task the episodes and their seeds are the same as without. ``horizons``
    (skill -> steps) overrides the skills' time limits (the env's ``horizons``).
    """
    from qtbench.data import eval_seeds
    from qtbench.envs import make_env
    from qtbench.envs.instructions import instructions_for

    texts = [ins.text for ins in instructions_for(task)] if handover is None else handover_instructions(task, handover)
    jobs = eval_jobs(texts, episodes_per_instruction, lambda count: list(eval_seeds(count, seed)))
    record = set(range(min(VIDEO_EPISODES, len(jobs)))) if video_dir else set()
    kwargs: dict[str, Any] = {"render_mode": "rgb_array"} if record else {}
    if horizons:
        kwargs["horizons"] = horizons
    start = time.perf_counter()
    outcomes, frames = run_episodes(
        act, lambda: make_env(task, **kwargs), jobs, history, num_envs, record, progress, target_return, handover
    )
    seconds = time.perf_counter() - start
    for job_index, episode in frames.items():
        out = outcomes[job_index]
        name = f"ep{job_index:02d}_{'success' if out.success else 'failure'}_{out.instruction.replace(' ', '_')}.gif"
        path = save_gif(Path(video_dir) / name, episode)
        log.info("saved video %s", path)
    return outcomes, seconds
