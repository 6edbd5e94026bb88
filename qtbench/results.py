"""Where a run's records live, what they contain, and how they are summarised.

Layout of one cell (task, algo, seed)::

    <results_dir>/<task>/<algo>/seed<k>/config.json   full resolved config
                                        metrics.csv   step, wall_seconds, loss, ...
                                        eval.json     success rates with 95% intervals

Every file is written atomically, and eval.json is written last, so a directory with an
eval.json holds a finished run. Timing fields of eval.json differ between identical runs;
``comparable_eval`` drops them so reproduction checks compare only the success numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from qtbench.io import atomic_write_json, atomic_write_text
from qtbench.report import markdown_table

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.json"
# eval.json fields that depend on the machine or the clock, not on the learned policy.
TIMING_FIELDS = ("train_seconds", "eval_seconds", "machine")
METRICS_HEAD = ("step", "wall_seconds", "loss")


def cell_dir(root: str | Path, task: str, algo: str, seed: int) -> Path:
    """The directory of one (task, algo, seed) cell under ``root`` (results or checkpoints)."""
    return Path(root) / task / algo / f"seed{seed}"


# Runs with config overrides (ablations, --set) live under <root>/ablations/<label>/.
ABLATIONS_DIR = "ablations"


def run_label(algo: str, overrides: dict[str, object] | None) -> str:
    """A file-name-safe name for an algorithm plus its config overrides.

    ``run_label("q_transformer", {"conservative": False, "n_step": 3})`` ->
    ``"q_transformer+n_step3+no_conservative"`` (overrides in key order).
    """
    parts = [algo]
    for key, value in sorted((overrides or {}).items()):
        if value is False:
            parts.append(f"no_{key}")
        elif value is True:
            parts.append(key)
        else:
            parts.append(re.sub(r"[^A-Za-z0-9._-]", "_", f"{key}{value}"))
    return "+".join(parts)


def run_root(base_dir: Path, algo: str, overrides: dict[str, object] | None) -> Path:
    """The ``results_dir`` (or ``checkpoint_dir``) a run with these overrides writes under."""
    if not overrides:
        return Path(base_dir)
    return Path(base_dir) / ABLATIONS_DIR / run_label(algo, overrides)


DEFAULT_DATA_REGIME = "default-bc"


def data_identity(config: dict[str, Any]) -> tuple[str, str]:
    """(regime, fingerprint) of the data a run trained on, from its config.json; runs that
    predate the record get ("unrecorded", "")."""
    data = config.get("data") or {}
    return (data.get("regime", "unrecorded"), data.get("fingerprint", "")) if data else ("unrecorded", "")


def data_suffixes(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Label suffixes that keep runs trained on different data in different leaderboard rows.

    ``runs`` are (task, config.json) pairs. Within a task where every run trained on the same
    data, no suffix; otherwise the runs on the task's reference data (the default regime's
    most common fingerprint) keep their plain label and every other run gets
    ``@<regime>-<first 8 hex digits of its fingerprint>`` (``@unrecorded`` for old runs).
    """
    by_task: dict[str, list[tuple[str, str]]] = {}
    for task, config in runs:
        by_task.setdefault(task, []).append(data_identity(config))
    reference = {}
    for task, identities in by_task.items():
        default = sorted(i for i in identities if i[0] == DEFAULT_DATA_REGIME)
        reference[task] = max(default, key=default.count) if default else None
    suffixes = []
    for task, config in runs:
        regime, fingerprint = data_identity(config)
        if len(set(by_task[task])) == 1 or (regime, fingerprint) == reference[task]:
            suffixes.append("")
        else:
            short = fingerprint.split(":")[-1][:8]
            suffixes.append(f"@{regime}" + (f"-{short}" if short else ""))
    return suffixes


def qtbench_version() -> str:
    try:
        return metadata.version("qtbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; (0, 1) when there is no trial.

    Wilson rather than the normal approximation because eval counts are small and rates
    are often 0 or 1, where the normal interval collapses to a point.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeOutcome:
    """One evaluation episode: which instruction, which skill, whether it succeeded."""

    instruction: str
    skill: str
    success: bool
    length: int = 0
    seed: int = 0


def _rate(successes: int, episodes: int) -> float:
    return successes / episodes if episodes else 0.0


def success_summary(outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    """The success fields of eval.json: overall, per skill (with intervals), per instruction."""
    per_skill: dict[str, dict[str, Any]] = {}
    per_instruction: dict[str, dict[str, Any]] = {}
    for out in outcomes:
        for table, key in ((per_skill, out.skill), (per_instruction, out.instruction)):
            row = table.setdefault(key, {"episodes": 0, "successes": 0})
            row["episodes"] += 1
            row["successes"] += int(out.success)
    for row in per_instruction.values():
        row["success_rate"] = _rate(row["successes"], row["episodes"])
    for row in per_skill.values():
        row["success_rate"] = _rate(row["successes"], row["episodes"])
        row["ci95"] = list(wilson_interval(row["successes"], row["episodes"]))
    total = sum(int(o.success) for o in outcomes)
    return {
        "success_rate": _rate(total, len(outcomes)),
        "ci95": list(wilson_interval(total, len(outcomes))),
        "episodes": len(outcomes),
        "per_skill": dict(sorted(per_skill.items())),
        "per_instruction": dict(sorted(per_instruction.items())),
    }


def comparable_eval(record: dict[str, Any]) -> dict[str, Any]:
    """eval.json without its timing fields: equal for two runs of the same config and seed."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    return atomic_write_json(directory / CONFIG_FILE, config)


def write_eval(directory: Path, record: dict[str, Any]) -> Path:
    return atomic_write_json(directory / EVAL_FILE, record)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@dataclass
class MetricsLog:
    """Rows of metrics.csv, kept in memory (and in checkpoints) and rewritten atomically.

    Rewriting the whole file keeps it consistent with the checkpoint it was saved with, so
    a resumed run continues the same file with no gap and no duplicate step.
    """

    rows: list[dict[str, float]] = field(default_factory=list)

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(dict(row))

    def columns(self) -> list[str]:
        extra: list[str] = []
        for row in self.rows:
            extra += [k for k in row if k not in METRICS_HEAD and k not in extra]
        return list(METRICS_HEAD) + extra

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (int(v) if k == "step" else repr(float(v))) for k, v in row.items()})
        return buf.getvalue()

    def write(self, directory: Path) -> Path:
        return atomic_write_text(directory / METRICS_FILE, self.to_csv())


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def summary_table(record: dict[str, Any], collector_rate: float | None = None) -> str:
    """A markdown table of one eval.json: per skill and overall success with 95% intervals.

    ``collector_rate`` (the autonomous collector's raw success rate, from the dataset
    manifest) is shown beside it for reference: the offline learner should beat it.
    """
    rows = []
    for skill, row in record["per_skill"].items():
        lo, hi = row["ci95"]
        rows.append([skill, f"{row['successes']}/{row['episodes']}", _pct(row["success_rate"]),
                     f"[{_pct(lo)}, {_pct(hi)}]"])
    lo, hi = record["ci95"]
    successes = sum(r["successes"] for r in record["per_skill"].values())
    rows.append(["**overall**", f"{successes}/{record['episodes']}", _pct(record["success_rate"]),
                 f"[{_pct(lo)}, {_pct(hi)}]"])
    table = markdown_table(["skill", "successes", "success", "95% CI (Wilson)"], rows)
    head = (f"{record['algo']} on {record['task']} (seed {record['seed']}, "
            f"{record['train_steps']} steps, {record['train_seconds']:.0f}s train, "
            f"{record['eval_seconds']:.0f}s eval)")
    lines = [head, "", table]
    if collector_rate is not None:
        lines += ["", f"autonomous collector (dataset manifest): {_pct(collector_rate)} success"]
    return "\n".join(lines)
