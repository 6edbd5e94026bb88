"""Scripted collection of a task's episodes, and writing them as its Minari datasets.

As in the Q-Transformer paper, demonstrations are successful episodes (reward 1 at the
last step, terminated) of a human-like scripted policy, and an autonomous collector's
successful episodes are discarded so that only failures (all rewards 0) are kept. Work
is split into one unit per (split, instruction); each unit runs its attempts in order
with seeds from :func:`qtbench.data.seeds.episode_seed`, so the result does not
depend on how many worker processes ran the units.

This module only collects with scripted policies and writes datasets; the default
pipeline (demos -> BC collection policy -> its failures) is :mod:`qtbench.datasets`,
which passes the failures of a learned policy to :func:`write_failures`.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Iterator

import numpy as np

from qtbench.benchmarks_md import machine_description
from qtbench.data.episode import Episode, summarize
from qtbench.data.profiles import get_profile
from qtbench.data.seeds import EVAL_SEED_OFFSET
from qtbench.data.store import DatasetName, dataset_id, regenerate_command, write_dataset
from qtbench.versions import code_version, package_versions

log = logging.getLogger(__name__)

# Which scripted policy (qtbench.envs.policies.make_policy kind) collects each split.
COLLECTORS = {"demos": "demo", "failures": "autonomous"}
AUTHOR = "qtbench contributors"


@dataclass(frozen=True)
class Unit:
    """One process's work: collect ``target`` kept episodes of one split and instruction."""

    task: str
    profile: str
    seed: int
    split: str  # "demos" or "failures"
    instruction: str
    target: int
    max_attempts: int


@dataclass
class UnitResult:
    unit: Unit
    episodes: list[Episode] = field(default_factory=list)
    attempts: int = 0
    discarded: int = 0  # attempts that were not kept (failed demos, successful autonomous episodes)
    surplus: int = 0  # kept-kind episodes beyond the target (batched collection runs a few extra attempts)
    # A learned collector's attempts: (the style attempted (qtbench.envs.attempts; "none": no
    # contact), success), in order.
    attempted: list[tuple[str, bool]] = field(default_factory=list)


_ENV_CACHE: dict[str, Any] = {}


def _env(task: str) -> Any:
    """One environment per task per process (building the MuJoCo scene is not free)."""
    if task not in _ENV_CACHE:
        from qtbench.envs import make_env

        _ENV_CACHE[task] = make_env(task)
    return _ENV_CACHE[task]


def rollout(env: Any, kind: str, seed: int, instruction: str) -> Episode:
    """One episode of scripted policy ``kind`` from ``reset(seed)`` with the instruction pinned.

    Scripted policies act on one observation at a time, so each worker process steps its own
    environment here; learned policies act batched through :func:`qtbench.evaluate.run_episodes`.
    """
    from qtbench.envs.policies import make_policy

    rng = np.random.default_rng([seed, 1])  # the policy's own stream, tied to the episode
    obs, info = env.reset(seed=seed, options={"instruction": instruction})
    policy = make_policy(kind, env, rng)
    policy.reset(obs, info)
    low, high = env.action_space.low, env.action_space.high
    limit = int(env.unwrapped.max_episode_steps)
    states, actions, rewards, terms, truncs = [obs["state"]], [], [], [], []
    for _ in range(limit):
        action = np.clip(np.asarray(policy.act(obs), np.float32), low, high)
        obs, reward, terminated, truncated, info = env.step(action)
        states.append(obs["state"])
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if terminated or truncated:
            break
    else:
        raise RuntimeError(f"episode of {instruction!r} did not end within max_episode_steps={limit}")
    return Episode.from_steps(instruction, seed, states, actions, rewards, terms, truncs, style=policy.style)


def keep(split: str, episode: Episode) -> bool:
    """Demos must end in success (reward 1, terminated); failures must have no reward."""
    if split == "demos":
        return bool(episode.terminations[-1]) and float(episode.rewards[-1]) == 1.0
    return episode.total_reward == 0.0 and not bool(episode.terminations[-1])


def collect_unit(unit: Unit) -> UnitResult:
    """Run attempts in order until ``target`` episodes are kept or attempts run out."""
    from qtbench.data.seeds import episode_seed

    env = _env(unit.task)
    result = UnitResult(unit)
    while len(result.episodes) < unit.target and result.attempts < unit.max_attempts:
        seed = episode_seed(unit.task, unit.profile, unit.seed, unit.split, unit.instruction, result.attempts)
        episode = rollout(env, COLLECTORS[unit.split], seed, unit.instruction)
        result.attempts += 1
        if keep(unit.split, episode):
            result.episodes.append(episode)
        else:
            result.discarded += 1
    return result


def make_units(task: str, profile: str, seed: int, split: str, instructions: int | None = None) -> list[Unit]:
    """Units of one split for every instruction of ``task``, or for ``instructions`` of them
    spread evenly over its list (so a sample of the multi-task list covers every skill)."""
    from qtbench.envs.instructions import instructions_for

    prof = get_profile(profile)
    chosen = instructions_for(task)
    if instructions is not None and instructions < len(chosen):
        chosen = tuple(chosen[i * len(chosen) // instructions] for i in range(instructions))
    targets = {"demos": prof.demos_per_instruction, "failures": prof.failures_per_instruction}
    return [
        Unit(task, profile, seed, split, ins.text, targets[split], targets[split] * prof.max_attempts_per_episode)
        for ins in chosen
    ]


def run_units(units: list[Unit], workers: int = 1, progress: bool = True) -> list[UnitResult]:
    """Collect every unit (in a spawn process pool when workers > 1), in unit order."""
    from tqdm import tqdm

    bar = tqdm(total=sum(u.target for u in units), unit="ep", desc="collecting", disable=not progress)

    def tick(results: Iterable[UnitResult]) -> Iterator[UnitResult]:
        for res in results:
            bar.update(res.unit.target)
            yield res

    try:
        if workers <= 1:
            return list(tick(map(collect_unit, units)))
        ctx = multiprocessing.get_context("spawn")  # no inherited MuJoCo/GL state
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            return list(tick(pool.map(collect_unit, units)))
    finally:
        bar.close()


def collector_cell(results: list[UnitResult], collector: str) -> dict[str, Any]:
    """How one split was collected: per instruction kept / target / attempts / discarded."""
    rows = {
        res.unit.instruction: {
            "kept": len(res.episodes), "target": res.unit.target, "attempts": res.attempts,
            "discarded": res.discarded, "surplus": res.surplus,
        }
        for res in results
    }
    return {
        "collector": collector,
        "per_instruction": rows,
        "attempts": sum(r["attempts"] for r in rows.values()),
        "discarded": sum(r["discarded"] for r in rows.values()),
        "shortfall": sum(r["target"] - r["kept"] for r in rows.values()),
    }


def _manifest(name: DatasetName, seed: int, cells: dict[str, Any], episodes: list[Episode],
              episode_seeds: list[int], max_episode_steps: int, policy: dict[str, Any] | None) -> dict[str, Any]:
    prof = get_profile(name.profile)
    checkpoint = policy.get("checkpoint") if policy and policy.get("external") else None
    return {
        "task": name.task,
        "split": name.split,
        "profile": name.profile,
        "profile_counts": asdict(prof),
        "failure_source": None if name.split == "demos" else name.source,
        "seed": seed,
        "seed_scheme": "reset seed = sha256(task|profile|seed|split|instruction|attempt) mod 2**31; "
        f"evaluation seeds start at {EVAL_SEED_OFFSET}",
        "episode_seeds": episode_seeds,
        "collectors": cells,
        "discarded_demo_attempts": cells.get("demos", {}).get("discarded", 0),
        "discarded_autonomous_successes": cells.get("failures", {}).get("discarded", 0),
        "collection_policy": policy,
        "max_episode_steps": max_episode_steps,
        "regenerate": regenerate_command(name.task, name.profile, seed, name.source, checkpoint),
        "code": code_version(),
        "versions": package_versions(),
        "machine": machine_description(),  # the collection policy's training and rollouts depend on the CPU
        **summarize(episodes),
    }


DESCRIPTIONS = {
    "demos": "Successful demonstrations (reward 1.0 at the final step, terminated) of the scripted "
    "human-like '{task}' policies, balanced per instruction.",
    "failures": "Failed episodes (all rewards 0.0) of {collector} on '{task}'; "
    "its successful episodes were discarded, as in the Q-Transformer paper.",
    "mixed": "Demonstrations followed by failed episodes of {collector} on '{task}' (the "
    "Q-Transformer paper's training data: demonstrations plus failed autonomous attempts).",
}
DEMO_COLLECTOR = "qtbench.envs.policies 'demo' (scripted, human-like noise)"
SCRIPTED_COLLECTOR = "the erring scripted autonomous collector (qtbench.envs.policies 'autonomous')"


def _failure_collector(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return SCRIPTED_COLLECTOR
    return (f"a trained qtbench {policy['algo']} policy ({policy['checkpoint']}, step {policy['step']}, "
            f"weights {policy['weights_hash'][:19]})")


def _algorithm_name(split: str, policy: dict[str, Any] | None) -> str:
    """Minari's algorithm_name: which collector produced the split's episodes."""
    failures = f"{_failure_collector(policy)}, successes discarded"
    return {"demos": DEMO_COLLECTOR, "failures": failures, "mixed": f"{DEMO_COLLECTOR} + {failures}"}[split]


def _write(name: DatasetName, seed: int, episodes: list[Episode], episode_seeds: list[int],
           cells: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
    from qtbench.envs import TASKS

    manifest = _manifest(name, seed, cells, episodes, episode_seeds, max_episode_steps(name.task), policy)
    metadata = dict(
        algorithm_name=_algorithm_name(name.split, policy),
        author=AUTHOR,
        code_permalink=f"{manifest['code']}: qtbench/data/generate.py",
        description=DESCRIPTIONS[name.split].format(task=name.task, collector=_failure_collector(policy))
        + f" Profile {name.profile!r}, seed {seed}; regenerate with `{manifest['regenerate']}`.",
    )
    return write_dataset(name.id, episodes, TASKS[name.task], manifest, metadata)


def max_episode_steps(task: str) -> int:
    return int(_env(task).unwrapped.max_episode_steps)


def _warn_shortfall(results: list[UnitResult]) -> None:
    for res in results:
        if len(res.episodes) < res.unit.target:
            log.warning(
                "%s %r: kept %d of %d episodes after %d attempts (the collector rarely produced this kind "
                "there; the manifest records the shortfall)",
                res.unit.split, res.unit.instruction, len(res.episodes), res.unit.target, res.attempts,
            )


def collect_demos(task: str, profile: str, seed: int, workers: int = 1, progress: bool = True,
                  instructions: int | None = None) -> list[UnitResult]:
    """Scripted demonstrations of every (or ``instructions`` of the) instruction(s) of ``task``."""
    return run_units(make_units(task, profile, seed, "demos", instructions), workers, progress)


def collect_scripted_failures(task: str, profile: str, seed: int, workers: int = 1, progress: bool = True,
                              instructions: int | None = None) -> list[UnitResult]:
    """Failures of the scripted autonomous collector (``--failures scripted``)."""
    return run_units(make_units(task, profile, seed, "failures", instructions), workers, progress)


def per_attempted_style(results: list[UnitResult]) -> dict[str, dict[str, Any]]:
    """A learned collector's attempts, successes and success rate per style it attempted."""
    from qtbench.envs.attempts import style_tally

    return style_tally(pair for res in results for pair in res.attempted)


def write_demos(task: str, profile: str, seed: int, results: list[UnitResult]) -> dict[str, Any]:
    """Write ``demos-<profile>``; returns its manifest."""
    _warn_shortfall(results)
    episodes = [ep for res in results for ep in res.episodes]
    cells = {"demos": collector_cell(results, COLLECTORS["demos"])}
    return _write(DatasetName(task, "demos", profile), seed, episodes, [int(ep.seed) for ep in episodes],
                  cells, None)


def write_failures(task: str, profile: str, seed: int, source: str, results: list[UnitResult],
                   demos: tuple[list[Episode], dict[str, Any]],
                   policy: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Write ``failures-<profile>-<source>`` and ``mixed-<profile>-<source>`` (the stored
    ``demos`` episodes and manifest, then these failures); returns both manifests.

    ``policy`` describes the learned policy that collected the failures (None: the scripted
    collector); its success rate over the collection attempts is added here.
    """
    dataset_id(task, "failures", profile, source)  # validates the names before any work
    _warn_shortfall(results)
    demo_episodes, demo_manifest = demos
    failures = [ep for res in results for ep in res.episodes]
    cell = collector_cell(results, f"checkpoint:{policy['algo']}" if policy else COLLECTORS["failures"])
    if policy is not None:
        policy = dict(policy, attempts=cell["attempts"], successes=cell["discarded"],
                      success_rate=cell["discarded"] / cell["attempts"] if cell["attempts"] else None,
                      per_attempted_style=per_attempted_style(results))
    failure_seeds = [int(ep.seed) for ep in failures]
    manifests = {
        "failures": _write(DatasetName(task, "failures", profile, source), seed, failures, failure_seeds,
                           {"failures": cell}, policy),
    }
    demo_seeds = list(demo_manifest["episode_seeds"])
    demo_episodes = [replace(ep, seed=s) for ep, s in zip(demo_episodes, demo_seeds)]  # read back without seeds
    manifests["mixed"] = _write(
        DatasetName(task, "mixed", profile, source), seed, demo_episodes + failures, demo_seeds + failure_seeds,
        {"demos": demo_manifest["collectors"]["demos"], "failures": cell}, policy,
    )
    return manifests
