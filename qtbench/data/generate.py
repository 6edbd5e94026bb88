"""Generation of a task's datasets: scripted demonstrations and failed autonomous episodes.

As in the Q-Transformer paper, demonstrations are successful episodes (reward 1 at the
last step, terminated) of a human-like scripted policy, and the autonomous collector's
successful episodes are discarded so that only failures (all rewards 0) are kept. Work
is split into one unit per (split, instruction); each unit runs its attempts in order
with seeds from :func:`qtbench.data.profiles.episode_seed`, so the result does not
depend on how many worker processes ran the units.
"""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from qtbench.data.manifest import package_versions, summarize
from qtbench.data.profiles import EVAL_SEED_OFFSET, get_profile
from qtbench.data.store import SPLITS, dataset_id, regenerate_command, write_dataset

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
    episodes: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    discarded: int = 0


_ENV_CACHE: dict[str, Any] = {}


def _env(task: str) -> Any:
    """One environment per task per process (building the MuJoCo scene is not free)."""
    if task not in _ENV_CACHE:
        from qtbench.envs import make_env

        _ENV_CACHE[task] = make_env(task)
    return _ENV_CACHE[task]


def rollout(env: Any, kind: str, seed: int, instruction: str) -> dict[str, Any]:
    """One episode of policy ``kind`` from ``reset(seed)`` with the instruction pinned."""
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
    states = np.asarray(states, np.float32)
    if not np.isfinite(states).all():  # an unstable simulation must not enter a dataset silently
        raise RuntimeError(f"non-finite state in the episode of {instruction!r} with reset seed {seed}")
    return dict(
        states=states,
        instruction=instruction,
        actions=np.asarray(actions, np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.asarray(terms, bool),
        truncations=np.asarray(truncs, bool),
        seed=seed,
        style=policy.style,
    )


def keep(split: str, episode: dict[str, Any]) -> bool:
    """Demos must end in success (reward 1, terminated); failures must have no reward."""
    if split == "demos":
        return bool(episode["terminations"][-1]) and float(episode["rewards"][-1]) == 1.0
    return float(np.sum(episode["rewards"])) == 0.0 and not bool(episode["terminations"][-1])


def collect_unit(unit: Unit) -> UnitResult:
    """Run attempts in order until ``target`` episodes are kept or attempts run out."""
    from qtbench.data.profiles import episode_seed

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


def make_units(task: str, profile: str, seed: int, instructions: int | None = None) -> list[Unit]:
    """Units of every instruction of ``task``, or of ``instructions`` of them spread evenly
    over its list (so a sample of the multi-task list covers every skill)."""
    from qtbench.envs.instructions import instructions_for

    prof = get_profile(profile)
    chosen = instructions_for(task)
    if instructions is not None and instructions < len(chosen):
        chosen = tuple(chosen[i * len(chosen) // instructions] for i in range(instructions))
    targets = {"demos": prof.demos_per_instruction, "failures": prof.failures_per_instruction}
    return [
        Unit(task, profile, seed, split, ins.text, targets[split], targets[split] * prof.max_attempts_per_episode)
        for split in ("demos", "failures")
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


def _code_version() -> str:
    """qtbench version and git commit of this checkout (when it is one), for metadata."""
    version = package_versions()["qtbench"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"qtbench {version}" + (f" (git {commit})" if commit else "")


def _manifest(task: str, split: str, profile: str, seed: int, results: list[UnitResult],
              episodes: list[dict[str, Any]], max_episode_steps: int,
              policy: dict[str, Any] | None = None) -> dict[str, Any]:
    prof = get_profile(profile)
    collectors = dict(COLLECTORS, failures=f"checkpoint:{policy['algo']}") if policy else COLLECTORS
    cells = {}
    for res in results:
        cell = cells.setdefault(res.unit.split, {"collector": collectors[res.unit.split], "per_instruction": {}})
        cell["per_instruction"][res.unit.instruction] = {
            "kept": len(res.episodes),
            "target": res.unit.target,
            "attempts": res.attempts,
            "discarded": res.discarded,
        }
    for cell in cells.values():
        rows = cell["per_instruction"].values()
        cell["attempts"] = sum(r["attempts"] for r in rows)
        cell["discarded"] = sum(r["discarded"] for r in rows)
        cell["shortfall"] = sum(r["target"] - r["kept"] for r in rows)
    return {
        "task": task,
        "split": split,
        "profile": profile,
        "profile_counts": asdict(prof),
        "seed": seed,
        "seed_scheme": "reset seed = sha256(task|profile|seed|split|instruction|attempt) mod 2**31; "
        f"evaluation seeds start at {EVAL_SEED_OFFSET}",
        "episode_seeds": [int(ep["seed"]) for ep in episodes],
        "collectors": cells,
        "discarded_demo_attempts": cells.get("demos", {}).get("discarded", 0),
        "discarded_autonomous_successes": cells.get("failures", {}).get("discarded", 0),
        "autonomous_policy": policy,
        "max_episode_steps": max_episode_steps,
        "regenerate": regenerate_command(task, profile, seed, policy and policy["checkpoint"]),
        "code": _code_version(),
        "versions": package_versions(),
        **summarize(episodes),
    }


DESCRIPTIONS = {
    "demos": "Successful demonstrations (reward 1.0 at the final step, terminated) of the scripted "
    "human-like '{task}' policies, balanced per instruction.",
    "failures": "Failed episodes (all rewards 0.0) of {collector} on '{task}'; "
    "its successful episodes were discarded, as in the Q-Transformer paper.",
    "mixed": "Demonstrations followed by failed episodes of {collector} on '{task}' (the "
    "Q-Transformer paper's training data: few successes, many failures).",
}
DEMO_COLLECTOR = "qtbench.envs.policies 'demo' (scripted, human-like noise)"


def _failure_collector(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return "the erring scripted autonomous collector (qtbench.envs.policies 'autonomous')"
    return f"a trained qtbench {policy['algo']} policy ({policy['checkpoint']}, step {policy['step']})"


def _algorithm_name(split: str, policy: dict[str, Any] | None) -> str:
    """Minari's algorithm_name: which collector produced the split's episodes."""
    failures = f"{_failure_collector(policy)}, successes discarded"
    return {"demos": DEMO_COLLECTOR, "failures": failures, "mixed": f"{DEMO_COLLECTOR} + {failures}"}[split]


def generate_task(task: str, profile: str = "default", seed: int = 0, workers: int = 1,
                  progress: bool = True, instructions: int | None = None,
                  autonomous_policy: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Generate and write ``demos``, ``failures`` and ``mixed`` of one task; returns their manifests.

    ``instructions`` limits generation to that many of the task's instructions, spread
    evenly over its list (benchmarks only).
    ``autonomous_policy``: a training checkpoint whose policy collects the failures instead
    of the scripted autonomous collector (in this process, batched over environments).
    """
    from qtbench.envs import TASKS

    ids = {split: dataset_id(task, split) for split in SPLITS}  # validates the task name
    get_profile(profile)
    units = make_units(task, profile, seed, instructions)
    log.info("generating %s (profile %s, seed %d): %d units on %d worker(s)", task, profile, seed, len(units), workers)
    if autonomous_policy is None:
        policy_info = None
        results = run_units(units, workers, progress)
    else:
        from qtbench.data.policy_collector import collect_with_policy, load_trained_policy

        policy = load_trained_policy(autonomous_policy, task)  # before any dataset is replaced
        policy_info = policy.describe()
        results = run_units([u for u in units if u.split == "demos"], workers, progress)
        results += collect_with_policy([u for u in units if u.split == "failures"], policy, progress=progress)
    by_split = {
        "demos": [r for r in results if r.unit.split == "demos"],
        "failures": [r for r in results if r.unit.split == "failures"],
    }
    by_split["mixed"] = by_split["demos"] + by_split["failures"]
    for res in results:
        if len(res.episodes) < res.unit.target:
            log.warning(
                "%s %r: kept %d of %d episodes after %d attempts",
                res.unit.split, res.unit.instruction, len(res.episodes), res.unit.target, res.attempts,
            )
    max_steps = int(_env(task).unwrapped.max_episode_steps)
    code = _code_version()
    manifests = {}
    for split in SPLITS:
        episodes = [ep for res in by_split[split] for ep in res.episodes]
        manifest = _manifest(task, split, profile, seed, by_split[split], episodes, max_steps, policy_info)
        metadata = dict(
            algorithm_name=_algorithm_name(split, policy_info),
            author=AUTHOR,
            code_permalink=f"{code}: qtbench/data/generate.py",
            description=DESCRIPTIONS[split].format(task=task, collector=_failure_collector(policy_info))
            + f" Profile {profile!r}, seed {seed}; regenerate with `{manifest['regenerate']}`.",
        )
        manifests[split] = write_dataset(ids[split], episodes, TASKS[task], manifest, metadata)
    return manifests


def ensure_datasets(task: str, profile: str = "default", seed: int = 0, workers: int = 1) -> None:
    """Generate a task's datasets when none exist; otherwise check that they were made
    with this profile and seed and that their content hashes still match."""
    from qtbench.data.store import read_episodes, read_manifest, dataset_dir, verify_episodes
    from qtbench.errors import QtbenchError

    ids = [dataset_id(task, split) for split in SPLITS]
    get_profile(profile)
    if not all((dataset_dir(did) / "data").exists() for did in ids):
        generate_task(task, profile, seed, workers)
        return
    for did in ids:
        manifest = read_manifest(did)
        made_with = (manifest.get("profile"), manifest.get("seed"))
        if made_with != (profile, seed):
            raise QtbenchError(
                f"dataset {did} was generated with profile {made_with[0]!r} and seed {made_with[1]}, "
                f"but profile {profile!r} and seed {seed} were asked for",
                f"regenerate it: {regenerate_command(task, profile, seed)}",
            )
        verify_episodes(did, read_episodes(did, manifest), manifest)
