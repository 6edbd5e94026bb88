"""Where a run's records live, what they contain, and how they are summarised.

Layout of one cell (task, algo, seed)::

    <results_dir>/<task>/<algo>/seed<k>/config.json   full resolved config
                                        metrics.csv   step, wall_seconds, loss, ...
                                        curve.csv     the learning curve: success on a fixed
                                                      subset of the evaluation episodes at a
                                                      few points during training
                                        eval.json     success rates with 95% intervals (overall,
                                                      per skill, per instruction) and the curve

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

from qtbench.atomic import atomic_write_json, atomic_write_text
from qtbench.benchmarks_md import markdown_table
from qtbench.data.store import DEFAULT_SOURCE as DEFAULT_FAILURES

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.json"
# eval.json fields that depend on the machine or the clock, not on the learned policy.
TIMING_FIELDS = ("train_seconds", "eval_seconds", "machine")
METRICS_HEAD = ("step", "wall_seconds", "loss")
CURVE_FILE = "curve.csv"
CURVE_KEY = "learning_curve"  # eval.json field holding the curve's points
CURVE_COLUMNS = ("step", "train_seconds", "eval_seconds", "episodes", "successes", "success_rate",
                 "ci95_lo", "ci95_hi")


def cell_dir(root: str | Path, task: str, algo: str, seed: int) -> Path:
    """The directory of one (task, algo, seed) cell under ``root`` (results or checkpoints)."""
    return Path(root) / task / algo / f"seed{seed}"


# Runs with config overrides (ablations, --set) live under <root>/ablations/<label>/.
ABLATIONS_DIR = "ablations"
# `qtbench tune` writes its searches under <root>/tuning/<algo>/ (not leaderboard cells).
TUNING_DIR = "tuning"
# Cells trained on a data regime the defaults no longer produce are kept, for the record, under
# <root>/archive/<regime>/ (each with its own leaderboard); the leaderboard of <root> skips them.
ARCHIVE_DIR = "archive"


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


def _data_folder(failures: str) -> str:
    """Runs on a non-default failure source write under ``failures-<source>/``."""
    return "" if failures == DEFAULT_FAILURES else f"failures-{failures}"


def run_root(base_dir: Path, algo: str, overrides: dict[str, object] | None, failures: str = DEFAULT_FAILURES) -> Path:
    """The ``results_dir`` (or ``checkpoint_dir``) a run with these overrides, on this failure
    source, writes under: neither ever overwrites the reference cell."""
    root = Path(base_dir) / _data_folder(failures)
    if not overrides:
        return root
    return root / ABLATIONS_DIR / run_label(algo, overrides)


def base_root(root: Path, algo: str, overrides: dict[str, object] | None, failures: str = DEFAULT_FAILURES) -> Path:
    """The ``base_dir`` that :func:`run_root` turned into ``root`` (``root`` itself when
    it is not a directory that run_root makes for these overrides and failure source)."""
    root = Path(root)
    if overrides and root.parts[-2:] == (ABLATIONS_DIR, run_label(algo, overrides)):
        root = root.parent.parent
    folder = _data_folder(failures)
    if folder and root.name == folder:
        root = root.parent
    return root


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
    furthest_stage: str | None = None  # the last of the skill's stages passed in order ("none")
    handover_step: int | None = None  # step at which a demo prefix handed over to the policy
    # where the fingers first closed (envs.attempts.first_closure): its verdict, and the gripper
    # point's offset (m, world x, y, z) from the instructed knob or object then; None for
    # drawer_close or when not tracked
    first_closure: str | None = None
    closure_offset: tuple[float, float, float] | None = None
    # the demonstrator style the episode attempted (envs.attempts.attempted_style; "none" without
    # contact); None when not scored
    attempted_style: str | None = None
    # how a failed pick_place / move_near episode ended with its object (envs.attempts.how_it_ended);
    # None for successes, the drawer skills, or when not scored
    ending: str | None = None


def _rate(successes: int, episodes: int) -> float:
    return successes / episodes if episodes else 0.0


def stage_funnel(outcomes: list[EpisodeOutcome]) -> dict[str, list]:
    """How many of one skill's episodes passed each of its stages, in stage order.

    ``{"names": [...], "counts": [...], "reached": [fractions]}``; an episode that passed
    stage k passed every stage before it (stages count only in order).
    """
    from qtbench.envs.base import SKILLS_BY_NAME

    names = list(SKILLS_BY_NAME[outcomes[0].skill].stage_names)
    passed = [names.index(o.furthest_stage) + 1 if o.furthest_stage in names else 0 for o in outcomes]
    counts = [sum(p > k for p in passed) for k in range(len(names))]
    return {"names": names, "counts": counts, "reached": [_rate(c, len(outcomes)) for c in counts]}


def closure_summary(outcomes: list[EpisodeOutcome]) -> dict[str, Any] | None:
    """Where one skill's failed episodes first closed the fingers
    (``envs.attempts.summarise_closures`` over them), or None when none was tracked."""
    from qtbench.envs.attempts import Closure, summarise_closures

    return summarise_closures(Closure(o.first_closure, o.closure_offset, None)
                              for o in outcomes if not o.success and o.first_closure is not None)


def style_summary(outcomes: list[EpisodeOutcome]) -> dict[str, dict[str, Any]] | None:
    """One skill's episodes per demonstrator style they attempted (``style_tally``); None when
    no style was scored."""
    from qtbench.envs.attempts import style_tally

    scored = [(o.attempted_style, o.success) for o in outcomes if o.attempted_style is not None]
    return style_tally(scored) if scored else None


def ending_summary(outcomes: list[EpisodeOutcome]) -> dict[str, Any] | None:
    """How one object skill's failed episodes ended (``envs.attempts.summarise_endings``), or
    None when none was scored."""
    from qtbench.envs.attempts import summarise_endings

    endings = [o.ending for o in outcomes if not o.success and o.ending is not None]
    return summarise_endings(outcomes[0].skill, endings) if endings else None


def success_summary(outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    """The success fields of eval.json: overall, per skill (with intervals), per instruction.

    Outcomes with a furthest stage also give each skill and instruction row its stage
    funnel (``stages``, see ``stage_funnel``), and each instruction row the furthest stage
    of every episode in evaluation order (``furthest_stage``). Each skill row of a grasping
    skill also says where its failed episodes first closed the fingers (``first_closure``,
    see ``closure_summary``), each skill row its success per demonstrator style attempted
    (``per_attempted_style``, see ``style_summary``), and each object skill's row how its failed
    episodes ended (``how_failures_ended``, see ``ending_summary``).
    """
    per_skill: dict[str, dict[str, Any]] = {}
    per_instruction: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[int, str], list[EpisodeOutcome]] = {}
    for out in outcomes:
        for index, (table, key) in enumerate(((per_skill, out.skill), (per_instruction, out.instruction))):
            row = table.setdefault(key, {"episodes": 0, "successes": 0})
            row["episodes"] += 1
            row["successes"] += int(out.success)
            groups.setdefault((index, key), []).append(out)
    staged = bool(outcomes) and all(o.furthest_stage is not None for o in outcomes)
    for (index, key), members in groups.items():
        row = (per_skill, per_instruction)[index][key]
        row["success_rate"] = _rate(row["successes"], row["episodes"])
        row["ci95"] = list(wilson_interval(row["successes"], row["episodes"]))
        if staged:
            row["stages"] = stage_funnel(members)
            if index == 1:
                row["furthest_stage"] = [o.furthest_stage for o in members]
        closures = closure_summary(members) if index == 0 else None
        if closures is not None:
            row["first_closure"] = closures
        styles = style_summary(members) if index == 0 else None
        if styles is not None:
            row["per_attempted_style"] = styles
        endings = ending_summary(members) if index == 0 else None
        if endings is not None:
            row["how_failures_ended"] = endings
    total = sum(int(o.success) for o in outcomes)
    return {
        "success_rate": _rate(total, len(outcomes)),
        "ci95": list(wilson_interval(total, len(outcomes))),
        "episodes": len(outcomes),
        "per_skill": dict(sorted(per_skill.items())),
        "per_instruction": dict(sorted(per_instruction.items())),
    }


def curve_point(step: int, train_seconds: float, eval_seconds: float, outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    """One point of the learning curve: overall success on ``outcomes`` after ``step`` updates."""
    summary = success_summary(outcomes)
    lo, hi = summary["ci95"]
    successes = sum(int(o.success) for o in outcomes)
    return {"step": int(step), "train_seconds": float(train_seconds), "eval_seconds": float(eval_seconds),
            "episodes": summary["episodes"], "successes": successes, "success_rate": summary["success_rate"],
            "ci95_lo": lo, "ci95_hi": hi}


def write_curve(directory: Path, points: list[dict[str, Any]]) -> Path:
    """curve.csv: one row per learning-curve point (CURVE_COLUMNS)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CURVE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: point[k] for k in CURVE_COLUMNS} for point in points)
    return atomic_write_text(Path(directory) / CURVE_FILE, buf.getvalue())


def handover_summary(outcomes: list[EpisodeOutcome], stage: str) -> dict[str, Any]:
    """The fields of eval_from_<stage>.json: success of the learned policy over the episodes
    it took over (with intervals and funnels, as in eval.json), and the episodes it never got:
    those where the demo never passed ``stage``, and those the demo finished in that step."""
    handed = [o for o in outcomes if o.handover_step is not None]
    steps = [o.handover_step for o in handed]
    return {
        "from_stage": stage,
        "episodes_total": len(outcomes),
        "demo_never_reached": sum(o.handover_step is None and not o.success for o in outcomes),
        "demo_finished_first": sum(o.handover_step is None and o.success for o in outcomes),
        "mean_handover_step": sum(steps) / len(steps) if steps else None,
        **success_summary(handed),
    }


def comparable_eval(record: dict[str, Any]) -> dict[str, Any]:
    """eval.json without its timing fields: equal for two runs of the same config and seed."""
    out = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
    if CURVE_KEY in out:
        out[CURVE_KEY] = [{k: v for k, v in p.items() if k not in TIMING_FIELDS} for p in out[CURVE_KEY]]
    return out


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


def read_losses(path: Path) -> Any:
    """The training loss at each logged step of a metrics.csv (``MetricsLog``: one row per
    step), as a pandas Series indexed by step; the values read back bit for bit (they are
    written as float reprs). OSError or ValueError when the file or its columns are missing."""
    import pandas as pd

    frame = pd.read_csv(path, usecols=["step", "loss"], float_precision="round_trip").dropna()
    return frame.set_index("step")["loss"]


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _success_row(name: str, row: dict[str, Any]) -> list[object]:
    lo, hi = row["ci95"] if "ci95" in row else wilson_interval(row["successes"], row["episodes"])
    return [name, f"{row['successes']}/{row['episodes']}", _pct(row["success_rate"]), f"[{_pct(lo)}, {_pct(hi)}]"]


SUCCESS_HEADER = ["skill", "successes", "success", "95% CI (Wilson)"]


def success_table(record: dict[str, Any]) -> str:
    """Per skill and overall success with 95% intervals, from success_summary's fields."""
    rows = [_success_row(skill, row) for skill, row in record["per_skill"].items()]
    successes = sum(r["successes"] for r in record["per_skill"].values())
    overall = {"successes": successes, "episodes": record["episodes"], "success_rate": record["success_rate"],
               "ci95": record["ci95"]}
    rows.append(_success_row("**overall**", overall))
    return markdown_table(SUCCESS_HEADER, rows)


def summary_table(record: dict[str, Any], collector_rate: float | None = None) -> str:
    """Markdown tables of one eval.json: success per skill, overall, per instruction and along
    the learning curve, each with its 95% Wilson interval.

    ``collector_rate`` (the raw success rate of the policy that collected the failures, the BC
    collection policy by default, from the dataset manifest) is shown beside it for
    reference: the offline learner should beat it.
    """
    head = (f"{record['algo']} on {record['task']} (seed {record['seed']}, "
            f"{record['train_steps']} steps, {record['train_seconds']:.0f}s train, "
            f"{record['eval_seconds']:.0f}s eval)")
    lines = [head, "", success_table(record)]
    per_instruction = [_success_row(text, row) for text, row in record.get("per_instruction", {}).items()]
    if per_instruction:
        lines += ["", markdown_table(["instruction", *SUCCESS_HEADER[1:]], per_instruction)]
    curve = record.get(CURVE_KEY, [])
    if curve:
        points = [[p["step"], f"{p['train_seconds']:.0f}", f"{p['successes']}/{p['episodes']}",
                   _pct(p["success_rate"]), f"[{_pct(p['ci95_lo'])}, {_pct(p['ci95_hi'])}]"] for p in curve]
        lines += ["", "learning curve (a fixed subset of the evaluation episodes):", "",
                  markdown_table(["step", "train s", "successes", "success", "95% CI (Wilson)"], points)]
    if collector_rate is not None:
        lines += ["", f"autonomous collector of the failures (dataset manifest): {_pct(collector_rate)} success "
                  "while collecting"]
    return "\n".join(lines)
