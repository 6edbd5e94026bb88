"""Re-running a cell (or re-generating datasets) and saying whether the numbers match (the
`qtbench reproduce` command is :mod:`qtbench.cli.reproduce`).

A cell is re-run from its config.json (algorithm, task, seed, steps, profile, the
algorithm config's differences from today's defaults as overrides, evaluation episodes)
into a temporary directory. Only the success fields of eval.json are compared (overall,
per skill and per instruction rates, Wilson bounds, episode and success counts, and the
number of training steps), never timings or the machine. Verdicts:

- identical: every compared number is equal (expected on CPU: runs are deterministic);
- within tolerance: every rate differs by at most ``tolerance`` (absolute, default
  0.05), every success count by at most ``tolerance`` x its episodes, and the episode
  counts and training steps are equal;
- different: anything else; the differing numbers are listed.

Beside the verdict, notes say what it rests on: whether the re-run trained on the same
datasets (their fingerprint), on the same kind of machine, and where its training losses
(metrics.csv) first leave the original's. Equal successes do not need equal bits (greedy
decoding absorbs a last-digit drift), so "identical" with drifting losses says that the
numbers, not the weights, reproduced.

``--datasets`` re-generates each task's datasets into a temporary
``MINARI_DATASETS_PATH`` with the profile and seed recorded in their manifests and
compares the content hashes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qtbench.errors import QtbenchError
from qtbench.results import CONFIG_FILE, EVAL_FILE, METRICS_FILE, read_losses

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.05
IDENTICAL, WITHIN, DIFFERENT = "identical", "within tolerance", "different"
# Fields of eval.json that must match exactly even "within tolerance" (they define the run).
_EXACT = ("episodes", "train_steps")
_RATES = ("success_rate", "ci95_lo", "ci95_hi")


@dataclass(frozen=True)
class Difference:
    field: str
    original: Any
    reproduced: Any


@dataclass(frozen=True)
class Verdict:
    kind: str  # IDENTICAL, WITHIN or DIFFERENT
    differences: tuple[Difference, ...]
    tolerance: float
    notes: tuple[str, ...] = ()  # context for a difference (e.g. which code made each side)

    @property
    def identical(self) -> bool:
        return self.kind == IDENTICAL


def success_fields(record: dict[str, Any]) -> dict[str, float | int]:
    """The compared numbers of an eval.json, flattened to ``path -> value``."""
    out: dict[str, float | int] = {}

    def add(prefix: str, row: dict[str, Any]) -> None:
        for key in ("success_rate", "episodes", "successes"):
            if key in row:
                out[prefix + key] = row[key]
        if "ci95" in row:
            out[prefix + "ci95_lo"], out[prefix + "ci95_hi"] = row["ci95"]

    add("", record)
    if "train_steps" in record:
        out["train_steps"] = record["train_steps"]
    for table in ("per_skill", "per_instruction"):
        for name, row in sorted(record.get(table, {}).items()):
            add(f"{table}[{name}].", row)
    return out


def _within(field: str, a: float, b: float, tolerance: float, fields: dict[str, float | int]) -> bool:
    key = field.rsplit(".", 1)[-1]
    if key in _EXACT:
        return a == b
    if key in _RATES:
        return abs(a - b) <= tolerance + 1e-12
    if key == "successes":
        episodes = fields.get(field[: -len(key)] + "episodes", 0)
        return abs(a - b) <= tolerance * episodes + 1e-12
    return a == b


def compare(original: dict[str, Any], reproduced: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """Compare the success fields of two eval.json records."""
    a, b = success_fields(original), success_fields(reproduced)
    keys = list(a) + [k for k in b if k not in a]
    differences = tuple(Difference(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k))
    if not differences:
        return Verdict(IDENTICAL, (), tolerance)
    close = all(
        d.original is not None and d.reproduced is not None and _within(d.field, d.original, d.reproduced, tolerance, a)
        for d in differences
    )
    return Verdict(WITHIN if close else DIFFERENT, differences, tolerance)


def format_verdict(verdict: Verdict, limit: int = 40) -> str:
    from qtbench.benchmarks_md import markdown_table

    rule = (f"tolerance: every rate within {verdict.tolerance:g} (absolute), success counts within "
            f"{verdict.tolerance:g} x episodes, episodes and train steps equal")
    lines = [f"verdict: {verdict.kind}", rule]
    if verdict.differences:
        rows = [[d.field, d.original, d.reproduced] for d in verdict.differences[:limit]]
        lines += ["", markdown_table(["field", "original", "reproduced"], rows)]
        if len(verdict.differences) > limit:
            lines.append(f"... and {len(verdict.differences) - limit} more differing fields")
    if verdict.notes:
        lines += ["", *(f"- {note}" for note in verdict.notes)]
    return "\n".join(lines)


def training_drift(original_dir: Path, reproduced_dir: Path) -> str | None:
    """Where the re-run's training losses first differ from the original's, step by step over
    the steps both logged (metrics.csv), or that they are equal at every one; None when either
    side has no loss record."""
    try:
        a, b = read_losses(Path(original_dir) / METRICS_FILE), read_losses(Path(reproduced_dir) / METRICS_FILE)
    except (OSError, ValueError):
        return None
    both = a.index.intersection(b.index)
    if both.empty:
        return None
    differ = [step for step in both if a[step] != b[step]]
    if not differ:
        return f"training losses bit-identical at all {len(both)} logged steps"
    step = differ[0]
    was, now = float(a[step]), float(b[step])
    relative = abs(now - was) / max(abs(was), 1e-300)
    return (f"training losses first differ at step {int(step)} of {int(both.max())}: {was!r} (original) against "
            f"{now!r} (re-run), relative {relative:.1e}; {len(differ)} of {len(both)} logged steps differ")


def context_notes(original: dict[str, Any], reproduced: dict[str, Any]) -> list[str]:
    """Notes on what differs around two eval.json records besides their numbers: the data they
    trained on (the dataset each read, and the regime's fingerprint) and the machine."""
    notes = []
    data_a, data_b = original.get("data") or {}, reproduced.get("data") or {}
    fingerprints = data_a.get("fingerprint"), data_b.get("fingerprint")
    if all(fingerprints) and fingerprints[0] != fingerprints[1]:
        read = data_a.get("dataset_id")
        hashes = [(d.get("content_hashes") or {}).get(read) for d in (data_a, data_b)]
        if all(hashes) and hashes[0] == hashes[1]:
            notes.append(f"read the same dataset ({read}, {hashes[0][:19]}); the regime's other datasets differ "
                         f"(fingerprint {fingerprints[0][:19]} of the original, {fingerprints[1][:19]} of the re-run)")
        else:
            task = original.get("task", "<task>")
            notes.append(f"trained on other data: the original's fingerprint {fingerprints[0][:19]}, the re-run's "
                         f"{fingerprints[1][:19]}; `qtbench reproduce --datasets --task {task}` says whether this "
                         "machine re-generates the stored datasets")
    if original.get("machine") and reproduced.get("machine") and original["machine"] != reproduced["machine"]:
        notes.append(f"other machine: the original ran on {original['machine']}; the re-run on {reproduced['machine']}")
    return notes


# ---- re-running a cell -------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise QtbenchError(f"cannot read the {what} {path}: {err}",
                           "pass a cell directory written by `qtbench run` or `qtbench sweep`") from err


def read_cell(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, eval.json) of a finished cell; QtbenchError naming what is missing."""
    run_dir = Path(run_dir)
    example = "results/<task>/<algo>/seed<k>/"
    if not run_dir.is_dir():
        raise QtbenchError(f"{run_dir} is not a directory", f"pass a cell's results directory, e.g. {example}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise QtbenchError(f"{run_dir} has no config.json: not a cell's results directory",
                           f"pass a directory like {example} that `qtbench run` or `qtbench sweep` wrote")
    if not (run_dir / EVAL_FILE).is_file():
        raise QtbenchError(f"{run_dir} has no eval.json: the run did not finish",
                           "finish it first (`qtbench run ... --resume` or `qtbench sweep`)")
    return _read_json(run_dir / CONFIG_FILE, "config"), _read_json(run_dir / EVAL_FILE, "evaluation record")


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def config_overrides(algo: str, algo_config: dict[str, Any]) -> dict[str, object]:
    """The stored algorithm config's fields that differ from the algorithm's current reference
    config (its defaults plus the settings frozen by `qtbench tune --freeze`); fields added
    since it was stored count at the value it ran with (``ranges.completed``). A cell that
    recorded no config has none."""
    from qtbench.algorithms import algorithm_class
    from qtbench.algorithms.ranges import completed
    from qtbench.train import reference_config

    defaults = dataclasses.asdict(reference_config(algo))
    overrides: dict[str, object] = {}
    stored = completed(algorithm_class(algo).config_class, algo_config) if algo_config else {}
    for key, value in stored.items():
        if key not in defaults:
            raise QtbenchError(
                f"the stored config of {algo} has a field {key!r} that the algorithm no longer has",
                "reproduce with the qtbench version that wrote it (see qtbench_version in config.json)",
            )
        if _normalise(defaults[key]) != value:
            overrides[key] = tuple(value) if isinstance(defaults[key], tuple) else value
    return overrides


def run_spec_from_config(config: dict[str, Any], workdir: Path):
    """The RunSpec that repeats a stored run, writing into ``workdir``."""
    from qtbench.train import RunSpec

    extra = {k: config[k] for k in ("device", "log_every", "checkpoint_every", "threads", "curve_points",
                                    "curve_episodes_per_instruction") if k in config}
    return RunSpec(
        algo=config["algo"],
        task=config["task"],
        seed=int(config["seed"]),
        steps=config.get("steps"),
        profile=config.get("profile", "default"),
        failures=(config.get("data") or {}).get("failure_source", "bc"),
        results_dir=workdir / "results",
        checkpoint_dir=workdir / "checkpoints",
        overrides=config_overrides(config["algo"], config.get("algo_config", {})),
        eval_episodes_per_instruction=config.get("eval_episodes_per_instruction"),
        **extra,
    )


def reproduce_cell(
    run_dir: Path,
    workdir: Path,
    tolerance: float = DEFAULT_TOLERANCE,
    run: Callable[[Any], Path] | None = None,
) -> tuple[Verdict, Path]:
    """Re-run the cell in ``run_dir`` into ``workdir``; returns the verdict and the new cell dir."""
    config, original = read_cell(run_dir)
    spec = run_spec_from_config(config, Path(workdir))
    if run is None:
        from qtbench.datasets import ensure_datasets
        from qtbench.train import DATA_SEED, run_cell as run

        ensure_datasets(spec.task, spec.profile, DATA_SEED, spec.failures, progress=spec.progress)
    new_dir = Path(run(spec))
    reproduced = json.loads((new_dir / EVAL_FILE).read_text())
    verdict = compare(original, reproduced, tolerance)
    # The re-run must have trained the same configuration, or the comparison means nothing.
    old_cfg = config.get("algo_config", {})
    new_cfg = json.loads((new_dir / CONFIG_FILE).read_text()).get("algo_config", {})
    config_diffs = tuple(
        Difference(f"config.algo_config.{k}", old_cfg.get(k), new_cfg.get(k))
        for k in sorted(set(old_cfg) | set(new_cfg)) if old_cfg.get(k) != new_cfg.get(k)
    )
    drift = training_drift(Path(run_dir), new_dir)
    notes = tuple(context_notes(original, reproduced) + ([drift] if drift else []))
    kind = DIFFERENT if config_diffs else verdict.kind
    return Verdict(kind, config_diffs + verdict.differences, tolerance, notes), new_dir


# ---- re-generating datasets --------------------------------------------------------------
def stored_tasks() -> list[str]:
    """Tasks that have datasets under the current MINARI_DATASETS_PATH."""
    from qtbench.data.store import list_datasets, parse_dataset_id

    return sorted({parse_dataset_id(did).task for did in list_datasets()})


def reproduce_datasets(tasks: list[str], workdir: Path, workers: int = 1) -> Verdict:
    """Re-generate each stored variant (profile, failure source) of each task's datasets into
    ``workdir`` (collection policy included) and compare content hashes with the manifests."""
    from qtbench.data import SPLITS, dataset_id
    from qtbench.data.store import list_datasets, parse_dataset_id, read_manifest, use_datasets_path
    from qtbench.datasets import FAILURE_SOURCES, generate_datasets

    differences, notes = [], []
    names = [parse_dataset_id(did) for did in list_datasets()]
    for task in tasks:
        for profile, source in sorted({(n.profile, n.source) for n in names if n.task == task and n.split == "mixed"}):
            ids = {split: dataset_id(task, split, profile, source) for split in SPLITS}
            stored = {split: read_manifest(did) for split, did in ids.items()}
            if source not in FAILURE_SOURCES:
                raise QtbenchError(
                    f"the {ids['failures']} failures were collected by a given checkpoint "
                    f"({(stored['failures'].get('collection_policy') or {}).get('checkpoint')}); "
                    "reproduce --datasets only re-generates the pipeline's own sources "
                    f"({', '.join(FAILURE_SOURCES)})",
                    f"check the stored files with `qtbench data verify`, or re-generate with: "
                    f"{stored['failures'].get('regenerate')}",
                )
            seed = int(stored["demos"].get("seed", 0))
            log.info("re-generating %s %s-%s (seed %d) into %s", task, profile, source, seed, workdir)
            with use_datasets_path(Path(workdir) / task / f"{profile}-{source}"):
                fresh = generate_datasets(task, profile, seed, source, workers=workers, progress=False).manifests
            before = len(differences)
            for split, did in ids.items():
                for key in ("content_hash", "episodes", "steps"):
                    if stored[split].get(key) != fresh[split].get(key):
                        differences.append(Difference(f"{did}.{key}", stored[split].get(key), fresh[split].get(key)))
            if len(differences) == before:
                continue
            old_code, new_code = stored["demos"].get("code"), fresh["demos"].get("code")
            if old_code != new_code:
                notes.append(f"{task}: stored datasets were made by {old_code}; this checkout is {new_code}")
            old_machine, new_machine = stored["failures"].get("machine"), fresh["failures"].get("machine")
            if old_machine != new_machine:
                notes.append(f"{task}: stored failures were collected on {old_machine or 'an unrecorded machine'}; "
                             f"this machine is {new_machine} (see cpu_kernels: the collection policy's float32 "
                             "training is bit-exact across AMD machines, not between AMD and Intel)")
    return Verdict(DIFFERENT if differences else IDENTICAL, tuple(differences), 0.0, tuple(notes))
