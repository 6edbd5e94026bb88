"""The data-collection policy: BC trained on a task's demos, and the failures it collects.

As in the Q-Transformer paper, the autonomous episodes come from a policy learned by
behaviour cloning on the demonstrations, rolled out greedily; its successful episodes are
thrown away and counted. The collection policy is the ``bc`` baseline with its default
config, trained exactly as the ``bc`` leaderboard row is (same data split, same
``build_learner`` and training loop, one torch thread) for the profile's budget (the bc
default except for the ``small`` test profile), with learner seed ``collection_seed(data
seed)``. Its checkpoint is kept beside the datasets, in
``$MINARI_DATASETS_PATH/qtbench/<task>/collection-policy-<profile>/`` (not a Minari dataset:
Minari's listing skips folders without ``data/``), with ``collection.json`` saying what it
was trained on; a killed training resumes bit-exactly from its last checkpoint.

Any other checkpoint of the training loop can collect failures too (``--autonomous-policy``).
Collection runs the policy over a batch of environments with the evaluation loop
(:func:`qtbench.evaluate.run_episodes`) in rounds: each round starts, per instruction,
enough attempts to cover the failures still missing at the success rate seen so far, and
keeps the first failures in attempt order, so which episodes are kept depends only on the
seeds (and the policy), not on the batch size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qtbench.atomic import atomic_write_json
from qtbench.data.generate import Unit, UnitResult, keep
from qtbench.data.hashing import HASH_PREFIX
from qtbench.data.profiles import get_profile
from qtbench.data.seeds import collection_seed, episode_seed
from qtbench.data.store import NAMESPACE, dataset_id, datasets_root, read_manifest
from qtbench.errors import QtbenchError
from qtbench.threads import torch_threads

log = logging.getLogger(__name__)

COLLECTION_ALGO = "bc"
RECORD_FILE = "collection.json"
# Environments stepped together (one batched act per control step). Measured collecting the
# drawer_open default failures (123 attempts, same seeds) with its default collection BC on a
# shared 2-core machine: 16 envs 3.7 attempts/s, 32 4.5/s, 64 4.7/s, 128 4.4/s.
COLLECTION_ENVS = 64
# Lowest failure rate assumed when sizing a round (a round never starts more than 10 attempts
# per missing failure; the profile's attempt cap bounds the total anyway).
MIN_FAILURE_RATE = 0.1


def policy_dir(task: str, profile: str) -> Path:
    """Where the collection policy of ``task``'s ``profile`` datasets lives."""
    return datasets_root() / NAMESPACE / task / f"collection-policy-{profile}"


def state_hash(state: Any) -> str:
    """sha256 over every tensor/array of a (nested) state dict, keys sorted: equal weights,
    equal hash (unlike the checkpoint file, which also stores the wall-clock time)."""
    import torch

    digest = hashlib.sha256()

    def visit(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value, key=str):
                visit(f"{key}/{k}", value[k])
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(f"{key}/{i}", v)
        elif isinstance(value, torch.Tensor):
            digest.update(key.encode() + repr(tuple(value.shape)).encode() + str(value.dtype).encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{key}={value!r}".encode())

    visit("", state)
    return HASH_PREFIX + digest.hexdigest()


# ---- training -------------------------------------------------------------------------
def collection_config() -> Any:
    """bc's default config, which the collection policy trains with (it must learn from the demos).

    The class defaults, not ``train.reference_config``: a setting frozen by ``qtbench tune``
    would otherwise change the collection policy, and so the datasets every search ran on."""
    from qtbench.algorithms import algorithm_class
    from qtbench.train import resolve_config

    config = resolve_config(algorithm_class(COLLECTION_ALGO).config_class, {})
    if config.dataset != "demos":
        raise QtbenchError(
            f"the {COLLECTION_ALGO} default config trains on {config.dataset!r}, but the collection policy "
            "must learn from the demos alone (the failures are what it collects)",
            f"set {COLLECTION_ALGO}'s default dataset back to 'demos' or collect with --failures scripted",
        )
    return config


def collection_record(task: str, profile: str, seed: int, config: Any = None) -> dict[str, Any]:
    """What the collection policy of ``task``'s ``profile`` datasets is trained with today
    (``collection.json``): bc's default config (``config``, resolved when not given), budget,
    learner seed, and the demos' id and hash."""
    from qtbench import checkpoint
    from qtbench.algorithms import default_steps

    config = config or collection_config()
    demos_id = dataset_id(task, "demos", profile)
    steps = get_profile(profile).collection_steps or default_steps(COLLECTION_ALGO)
    return {
        "algo": COLLECTION_ALGO,
        "algo_config": checkpoint.normalise_config(dataclasses.asdict(config)),
        "learner_seed": collection_seed(seed),
        "steps": steps,
        "default_steps": steps == default_steps(COLLECTION_ALGO),
        "threads": 1,
        "trained_on": {"dataset_id": demos_id, "content_hash": read_manifest(demos_id)["content_hash"]},
    }


def train_collection_policy(task: str, profile: str, seed: int, progress: bool = True) -> Path:
    """Train the BC collection policy on ``demos-<profile>`` of ``task`` (resuming a killed
    training, reusing a finished one trained on the same demos); returns its directory."""
    from qtbench import checkpoint
    from qtbench.algorithms import algorithm_class
    from qtbench.data import TransitionData
    from qtbench.train import RunSpec, build_learner, train

    config = collection_config()
    record = collection_record(task, profile, seed, config)
    steps = record["steps"]
    directory = policy_dir(task, profile)
    state = checkpoint.load(directory) if _read_record(directory) == record else None
    if state is not None and state.step >= steps:
        log.info("collection policy %s is trained (step %d): reusing it", directory, state.step)
        return directory
    if state is None and directory.exists():
        log.info("collection policy %s was trained on other demos or settings: training it again", directory)
        shutil.rmtree(directory)
    elif state is not None:
        log.info("resuming the collection policy %s from step %d", directory, state.step)
    atomic_write_json(directory / RECORD_FILE, record)
    spec = RunSpec(algo=COLLECTION_ALGO, task=task, seed=record["learner_seed"], steps=steps, profile=profile,
                   results_dir=directory, checkpoint_dir=directory, progress=progress, threads=1)
    with torch_threads(1):
        data = TransitionData.load(task, "demos", successful_only=config.filtered, profile=profile)
        algorithm, sampler, rng = build_learner(spec, algorithm_class(COLLECTION_ALGO), config, data)
        train(algorithm, sampler, rng, spec, record["algo_config"], directory, directory, state)
    return directory


def _read_record(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


# ---- loading --------------------------------------------------------------------------
@dataclasses.dataclass
class TrainedPolicy:
    """A trained algorithm ready to act, and where it came from (for the manifest)."""

    algorithm: Any
    algo: str
    history: int
    target_return: float
    checkpoint: str
    step: int
    weights_hash: str
    device: str = "cpu"

    def describe(self) -> dict[str, Any]:
        return {"algo": self.algo, "checkpoint": self.checkpoint, "step": self.step,
                "weights_hash": self.weights_hash}

    def act(self, window: Any) -> np.ndarray:
        return np.asarray(self.algorithm.act(window.to_torch(self.device)), np.float32)


def load_trained_policy(checkpoint_path: str | Path, task: str, profile: str, device: str = "cpu") -> TrainedPolicy:
    """Rebuild the policy stored in a training checkpoint (its directory or its last.pt).

    The model is sized from the dataset it was trained on (``config.dataset`` of ``task``'s
    ``profile`` datasets, failure source bc for a split that has failures), exactly as the
    training loop sized it, so that dataset must be present.
    """
    from qtbench import checkpoint
    from qtbench.algorithms import algorithm_class
    from qtbench.data import TransitionData
    from qtbench.train import resolve_config

    path = Path(checkpoint_path)
    directory = path.parent if path.is_file() else path
    state = checkpoint.load(directory)
    if state is None:
        raise QtbenchError(
            f"no training checkpoint at {path}",
            "train a policy first (e.g. `qtbench run --algo bc --task <task>`) and pass its "
            f"checkpoint directory (…/<task>/<algo>/seed<k>/) or its {checkpoint.CHECKPOINT_FILE}",
        )
    cls = algorithm_class(state.algo)
    config = resolve_config(cls.config_class, dict(state.algo_config))
    spec = TransitionData.load(task, config.dataset, profile=profile).spec_info()
    algorithm = cls(spec, config, device=device)
    algorithm.load_state_dict(state.algorithm)
    log.info("collecting with %s from %s (step %d)", state.algo, directory, state.step)
    return TrainedPolicy(algorithm, state.algo, int(config.history), float(config.target_return), str(directory),
                         int(state.step), state_hash(state.algorithm), device)


# ---- collecting -----------------------------------------------------------------------
def collect_failures(units: list[Unit], policy: TrainedPolicy, num_envs: int = COLLECTION_ENVS,
                     progress: bool = True) -> list[UnitResult]:
    """Fill failure ``units`` with the policy's failed greedy episodes (see the module doc)."""
    from tqdm import tqdm

    from qtbench.envs import make_env
    from qtbench.envs.attempts import NO_ATTEMPT, attempted_style
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.evaluate import EpisodeRecorder, EvalJob, run_episodes

    results = [UnitResult(unit) for unit in units]
    bar = tqdm(total=sum(u.target for u in units), unit="ep", desc="collecting failures", disable=not progress)
    try:
        while True:
            attempts = sum(r.attempts for r in results)
            failure_rate = 1.0 - sum(r.discarded for r in results) / attempts if attempts else 1.0
            jobs: list[tuple[UnitResult, int]] = []  # (unit, attempt index), in a fixed order
            for res in results:
                missing = res.unit.target - len(res.episodes)
                wanted = math.ceil(missing / max(failure_rate, MIN_FAILURE_RATE)) if missing > 0 else 0
                jobs += [(res, res.attempts + i) for i in range(min(wanted, res.unit.max_attempts - res.attempts))]
            if not jobs:
                break
            eval_jobs = [EvalJob(r.unit.instruction, _seed(r.unit, a)) for r, a in jobs]
            recorder = EpisodeRecorder(eval_jobs)
            run_episodes(policy.act, lambda: make_env(units[0].task), eval_jobs, policy.history, num_envs,
                         progress=False, target_return=policy.target_return, on_step=recorder,
                         track_stages=False)  # collection keeps whole episodes; funnels are evaluation's
            for (res, _), episode in zip(jobs, recorder.episodes()):
                res.attempts += 1
                style = attempted_style(BY_TEXT[episode.instruction], episode.states) or NO_ATTEMPT
                res.attempted.append((style, float(np.sum(episode.rewards)) > 0))
                if not keep(res.unit.split, episode):
                    res.discarded += 1
                elif len(res.episodes) < res.unit.target:
                    res.episodes.append(episode)
                    bar.update(1)
                else:
                    res.surplus += 1
    finally:
        bar.close()
    return results


def _seed(unit: Unit, attempt: int) -> int:
    return episode_seed(unit.task, unit.profile, unit.seed, unit.split, unit.instruction, attempt)


# ---- evaluating -----------------------------------------------------------------------
EVAL_RECORD = "collection_policy.json"  # in <results_dir>/<task>/: the task's own policy, per seed
EVAL_RECORDS = f"{Path(EVAL_RECORD).stem}*.json"  # glob of every record in <results_dir>/<task>/ (eval_record_name)


def eval_record_name(task: str, policy_task: str) -> str:
    """The record's file name in ``<results_dir>/<task>/``: ``collection_policy.json`` for the
    task's own collection policy, ``collection_policy_from_<policy_task>.json`` for another's."""
    return EVAL_RECORD if policy_task == task else f"{Path(EVAL_RECORD).stem}_from_{policy_task}.json"


def evaluate_collection_policy(task: str, profile: str, data_seed: int, seeds: list[int],
                               episodes_per_instruction: int | None = None, results_dir: Path = Path("results"),
                               progress: bool = True, policy_task: str | None = None) -> Path:
    """Evaluate the collection policy of ``policy_task``'s datasets (default: ``task``'s own)
    on ``task``'s evaluation episodes of each run seed in ``seeds`` (the episodes every
    algorithm's run with that ``--seed`` meets), so it sits in the comparison paired with the
    learners; writes ``<results_dir>/<task>/`` + :func:`eval_record_name`. ``policy_task``
    ``all`` scores the suite's multi-task policy on one skill's episodes, beside that skill's
    own policy on the same episodes.
    """
    from qtbench.benchmarks_md import machine_description
    from qtbench.datasets import ensure_datasets
    from qtbench.envs.instructions import MULTI_TASK
    from qtbench.evaluate import default_episodes, evaluate_policy
    from qtbench.results import qtbench_version, success_summary

    policy_task = policy_task or task
    if policy_task not in (task, MULTI_TASK):
        raise QtbenchError(f"the collection policy of {policy_task} does not know {task}'s instructions",
                           f"pass --policy-task {task} (its own) or --policy-task {MULTI_TASK} (every instruction)")
    ensure_datasets(policy_task, profile, data_seed, progress=progress)
    directory = policy_dir(policy_task, profile)
    policy = load_trained_policy(directory, policy_task, profile)
    episodes = episodes_per_instruction or default_episodes(task)
    per_seed = {}
    with torch_threads(1):
        for seed in seeds:
            outcomes, seconds = evaluate_policy(policy.act, task, policy.history, episodes, seed,
                                                progress=progress, target_return=policy.target_return)
            per_seed[str(seed)] = {"eval_seconds": seconds, **success_summary(outcomes)}
    record = {"task": task, "policy_task": policy_task, "profile": profile, "data_seed": data_seed,
              "episodes_per_instruction": episodes, "policy": policy.describe(),
              "trained_on": (_read_record(directory) or {}).get("trained_on"),
              "machine": machine_description(), "qtbench_version": qtbench_version(), "seeds": per_seed}
    return atomic_write_json(Path(results_dir) / task / eval_record_name(task, policy_task), record)
