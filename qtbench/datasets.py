"""The data pipeline of a task: scripted demos -> BC collection policy -> its failures.

This module sits above both :mod:`qtbench.data` (storage, scripted collection, sampling)
and :mod:`qtbench.train` (the collection policy is trained by the training loop), so
neither imports the other's way back. Stages, each one written before the next starts:

1. **demos**: scripted human-like demonstrations -> ``demos-<profile>``;
2. **collection policy** (failure source ``bc``, the default): the ``bc`` baseline trained
   on those demos (:mod:`qtbench.collection_policy`), kept beside the datasets;
3. **failures**: the policy's greedy failed episodes (successes discarded and counted) ->
   ``failures-<profile>-<source>`` and ``mixed-<profile>-<source>`` (demos + failures).

``failures="scripted"`` collects with the erring scripted collector instead (a harder,
off-distribution variant), and ``autonomous_policy`` with any training checkpoint (source
``policy<first 8 hex digits of its weights hash>``). Every variant has its own ids, so
switching never deletes anything.

Resuming (``resume=True``; what ``qtbench run`` and ``qtbench data generate --resume`` do):
demos of the same seed are reused after their hash is verified, a collection policy
trained on those demos is reused (a killed training continues from its last checkpoint,
bit-exactly), and the failures are collected again (deterministically). Without it every
stage is redone. Datasets are written through a staging folder and renamed into place, so
a killed generation never leaves half a dataset visible.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtbench.data.episode import Episode
from qtbench.data.store import DEFAULT_SOURCE, SCRIPTED_SOURCE, SPLITS, dataset_id, datasets_root, read_manifest
from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

FAILURE_SOURCES = (DEFAULT_SOURCE, SCRIPTED_SOURCE)
STAGES = ("demos", "collection policy", "failures", "writing")


@dataclass
class Generated:
    """What one generation wrote, and the seconds each stage took."""

    manifests: dict[str, dict[str, Any]]  # split -> manifest
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


def check_failure_source(failures: str) -> str:
    if failures not in FAILURE_SOURCES:
        raise QtbenchError(
            f"unknown failure source {failures!r}",
            f"use --failures {DEFAULT_SOURCE} (the BC collection policy, default) or --failures {SCRIPTED_SOURCE}; "
            "for another trained policy pass its checkpoint with --autonomous-policy",
        )
    return failures


def _check_checkpoint(path: str | Path) -> None:
    """Fail before any work when ``--autonomous-policy`` names no training checkpoint."""
    from qtbench.checkpoint import CHECKPOINT_FILE

    path = Path(path)
    if not (path.is_file() or (path / CHECKPOINT_FILE).is_file()):
        raise QtbenchError(
            f"no training checkpoint at {path}",
            "train a policy first (e.g. `qtbench run --algo bc --task <task>`) and pass its "
            f"checkpoint directory (…/<task>/<algo>/seed<k>/) or its {CHECKPOINT_FILE}",
        )


def _stored_demos(task: str, profile: str, seed: int) -> tuple[list[Episode], dict[str, Any]] | None:
    """The stored, hash-verified demos of this seed, or None when absent or of another seed."""
    from qtbench.data.store import dataset_dir, read_dataset

    did = dataset_id(task, "demos", profile)
    if not (dataset_dir(did) / "data").exists():
        return None
    stored = read_dataset(did, verify=True)
    return (stored.episodes, stored.manifest) if stored.manifest.get("seed") == seed else None


def generate_datasets(task: str, profile: str = "default", seed: int = 0, failures: str = DEFAULT_SOURCE,
                      autonomous_policy: str | Path | None = None, workers: int = 1, progress: bool = True,
                      instructions: int | None = None, resume: bool = False) -> Generated:
    """Write ``task``'s demos, failures and mixed datasets of one profile and failure source.

    ``workers`` processes collect the scripted episodes; the learned policy collects in
    this process, batched over environments, on one torch thread. ``instructions`` limits
    generation to that many of the task's instructions (benchmarks only).
    """
    from qtbench.collection_policy import collect_failures, load_trained_policy, train_collection_policy
    from qtbench.data import generate
    from qtbench.data.store import read_dataset
    from qtbench.threads import torch_threads

    check_failure_source(failures)
    dataset_id(task, "demos", profile)  # validates task and profile before any work
    if autonomous_policy is not None:
        _check_checkpoint(autonomous_policy)
    out = Generated({})
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        out.seconds[stage] += now - clock
        clock = now

    demos = _stored_demos(task, profile, seed) if resume and instructions is None else None
    if demos is None:
        results = generate.collect_demos(task, profile, seed, workers, progress, instructions)
        lap("demos")
        out.manifests["demos"] = generate.write_demos(task, profile, seed, results)
        demos = (read_dataset(out.manifests["demos"]["dataset_id"]).episodes, out.manifests["demos"])
        lap("writing")
    else:
        log.info("reusing the stored %s", demos[1]["dataset_id"])
        out.manifests["demos"] = demos[1]
        lap("demos")

    policy_info = None
    if autonomous_policy is None and failures == SCRIPTED_SOURCE:
        source = SCRIPTED_SOURCE
        results = generate.collect_scripted_failures(task, profile, seed, workers, progress, instructions)
        lap("failures")
    else:
        if autonomous_policy is None:
            checkpoint = train_collection_policy(task, profile, seed, progress)
            lap("collection policy")
        else:
            checkpoint = Path(autonomous_policy)
        policy = load_trained_policy(checkpoint, task, profile)
        policy_info = policy.describe()
        if autonomous_policy is None:
            source = DEFAULT_SOURCE
            policy_info["checkpoint"] = checkpoint.relative_to(datasets_root()).as_posix()
            policy_info["training"] = _collection_record(checkpoint)
        else:
            source = "policy" + policy.weights_hash.split(":")[1][:8]
            policy_info["external"] = True
        with torch_threads(1):
            units = generate.make_units(task, profile, seed, "failures", instructions)
            results = collect_failures(units, policy, progress=progress)
        lap("failures")
    out.manifests.update(generate.write_failures(task, profile, seed, source, results, demos, policy_info))
    lap("writing")
    return out


def _collection_record(directory: Path) -> dict[str, Any]:
    import json

    from qtbench.collection_policy import RECORD_FILE

    return json.loads((directory / RECORD_FILE).read_text())


def ensure_datasets(task: str, profile: str = "default", seed: int = 0, failures: str = DEFAULT_SOURCE,
                    workers: int = 1, progress: bool = True) -> None:
    """Generate what is missing of a task's datasets (resuming); check that present ones
    were made with this seed and that their content hashes still match."""
    from qtbench.data.store import dataset_dir, read_dataset, regenerate_command

    check_failure_source(failures)
    ids = [dataset_id(task, split, profile, failures) for split in SPLITS]
    if not all((dataset_dir(did) / "data").exists() for did in ids):
        generate_datasets(task, profile, seed, failures, workers=workers, progress=progress, resume=True)
        return
    for did in ids:
        stored = read_dataset(did, verify=True)
        if stored.manifest.get("seed") != seed:
            raise QtbenchError(
                f"dataset {did} was generated with seed {stored.manifest.get('seed')}, but seed {seed} was asked for",
                f"regenerate it: {regenerate_command(task, profile, seed, failures)}",
            )
    if failures == DEFAULT_SOURCE:
        _check_collection_policy(task, profile, seed, read_manifest(dataset_id(task, "failures", profile, failures)))


def _check_collection_policy(task: str, profile: str, seed: int, manifest: dict[str, Any]) -> None:
    """Refuse failures collected by a BC policy trained otherwise than bc's defaults of today
    (after an upgrade changed them): the datasets would no longer be the default pipeline's."""
    from qtbench.algorithms import algorithm_class
    from qtbench.algorithms.ranges import completed, differing_fields
    from qtbench.collection_policy import COLLECTION_ALGO, collection_record
    from qtbench.data.store import regenerate_command

    trained = (manifest.get("collection_policy") or {}).get("training") or {}
    expected = collection_record(task, profile, seed)
    # a field added since the policy was trained counts at the value it trained with
    trained_config = completed(algorithm_class(COLLECTION_ALGO).config_class, trained.get("algo_config", {}))
    changed = differing_fields(trained_config, expected["algo_config"])
    changed += [key for key in ("steps", "learner_seed", "trained_on") if expected[key] != trained.get(key)]
    if changed:
        raise QtbenchError(
            f"the failures of {manifest['dataset_id']} were collected by a BC policy trained with other settings "
            f"than bc's defaults of this version ({', '.join(changed)} differ)",
            f"regenerate the datasets: {regenerate_command(task, profile, seed)}",
        )


def collector_success_rate(task: str, profile: str = "default", failures: str = "bc") -> float | None:
    """The raw success rate on ``task`` of the policy that collected the failures (the BC
    collection policy by default): the successes it had (and
    that were discarded, as in the paper) over all its attempts, from the failures manifest."""
    try:
        cell = read_manifest(dataset_id(task, "failures", profile, failures))["collectors"]["failures"]
    except (QtbenchError, KeyError, OSError):
        return None
    return cell["discarded"] / cell["attempts"] if cell.get("attempts") else None
