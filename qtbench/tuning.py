"""One tuning rule for every algorithm, and the settings it froze (the `qtbench tune`
command is :mod:`qtbench.cli.tune`).

The rule, the same for Q-Transformer and every baseline:

1. Each algorithm declares at most ``MAX_SETTINGS`` settings next to its config
   (``TUNING_SETTINGS`` in its module: config overrides), the first being its paper's
   recipe for sparse binary rewards.
2. ``qtbench tune --algo A`` trains every setting on the tuning task (``drawer_open``)
   with seeds 0 and 1, at the algorithm's default budget and evaluation, from the
   algorithm's own defaults (never from a frozen setting), through the
   sweep's cell machinery: finished cells are skipped and interrupted ones resume, so a
   search can be finished over several sittings. Cells live under
   ``results/tuning/<algo>/`` (override runs, so under ``ablations/<label>/`` there).
3. The chosen setting has the highest mean success over the seeds; a tie goes to the
   earlier setting (the paper's recipe first). The command writes
   ``results/tuning/<algo>/tuning.json`` and the benchmarks.md section ``tuning-<algo>``.
4. ``--freeze`` records the chosen setting in ``qtbench/tuned.json`` (committed). From
   then on every run of the algorithm, on every task, starts from the frozen setting
   (:func:`reference_overrides`), and the leaderboard and ``qtbench reproduce`` compare
   stored configs against it; ``--set`` still overrides single fields, ``qtbench run
   --untuned`` starts from the recipe, and a sweep runs cells finished before the freeze
   again. Comparisons use ``COMPARISON_SEEDS``, not the seeds the choice was made on.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from qtbench.errors import QtbenchError

TUNING_TASK = "drawer_open"
TUNING_SEEDS = (0, 1)
# The seeds comparisons run (`qtbench sweep`'s default): the next three, so no reported cell is
# one of the runs its setting was chosen on (the run seed also picks the evaluation episodes).
COMPARISON_SEEDS = tuple(range(len(TUNING_SEEDS), len(TUNING_SEEDS) + 3))
MAX_SETTINGS = 8
SUMMARY_FILE = "tuning.json"
TUNED_FILE = Path(__file__).with_name("tuned.json")  # the frozen settings, one entry per algorithm
RULE = (
    "highest mean success over the seeds on the tuning task; a tie goes to the earlier setting "
    "(the first is the algorithm's paper's recipe for sparse binary rewards)"
)


# ---- the frozen settings -------------------------------------------------------------------
def _read_tuned(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise QtbenchError(f"cannot read the frozen settings {path}: {err}",
                           "restore it from git, or delete it to run every algorithm on its defaults") from err


def reference_overrides(algo: str, path: Path | None = None) -> dict[str, object]:
    """The config overrides frozen for ``algo`` by ``qtbench tune --freeze`` (empty if none)."""
    return dict(_read_tuned(path or TUNED_FILE).get(algo, {}).get("settings", {}))


def freeze(algo: str, summary: dict[str, Any], path: Path | None = None) -> Path:
    """Record the chosen setting of a finished search as ``algo``'s reference settings."""
    from qtbench.atomic import atomic_write_json

    path = path or TUNED_FILE
    if summary["chosen"] is None:
        missing = sum(len(summary["seeds"]) - len(s["seeds"]) for s in summary["settings"])
        raise QtbenchError(f"the {algo} search is not finished ({missing} cells to go): nothing to freeze",
                           f"run `qtbench tune --algo {algo}` until every cell is done, then --freeze")
    chosen = summary["settings"][summary["chosen"]]
    tuned = _read_tuned(path)
    tuned[algo] = {"settings": chosen["setting"], "label": chosen["label"], "task": summary["task"],
                   "mean_success": chosen["mean"], "seeds": summary["seeds"], "steps": summary["steps"],
                   "source": f"results/tuning/{algo}/{SUMMARY_FILE}", "rule": RULE}
    return atomic_write_json(path, tuned)


# ---- the search ----------------------------------------------------------------------------
def tuning_settings(algo: str) -> list[dict[str, object]]:
    """The settings ``algo`` declares (``TUNING_SETTINGS`` beside its config), typed and checked."""
    from qtbench.algorithms import algorithm_class
    from qtbench.train import typed_overrides

    cls = algorithm_class(algo)
    settings = getattr(sys.modules[cls.__module__], "TUNING_SETTINGS", None)
    if not settings:
        raise QtbenchError(f"{algo} declares no tuning settings",
                           f"add TUNING_SETTINGS (a list of config overrides) beside its config in {cls.__module__}")
    if len(settings) > MAX_SETTINGS:
        raise QtbenchError(f"{algo} declares {len(settings)} tuning settings, more than the rule's {MAX_SETTINGS}",
                           f"keep at most {MAX_SETTINGS} in {cls.__module__}.TUNING_SETTINGS")
    return [typed_overrides(cls.config_class, setting) for setting in settings]


def search_config(algo: str, results_dir: Path, checkpoint_dir: Path, task: str = TUNING_TASK,
                  seeds: tuple[int, ...] = TUNING_SEEDS, **sweep_fields: Any):
    """The sweep grid of a search: every declared setting x seed on the tuning task."""
    from qtbench.results import TUNING_DIR
    from qtbench.sweep import SweepConfig

    return SweepConfig(
        algos=[algo], tasks=[task], seeds=list(seeds), settings=tuning_settings(algo), tuned=False,
        results_dir=Path(results_dir) / TUNING_DIR / algo, checkpoint_dir=Path(checkpoint_dir) / TUNING_DIR / algo,
        **sweep_fields,
    )


def summarise(config: Any) -> dict[str, Any]:
    """Each setting's per-seed success (finished cells) and mean, and the chosen one (None until
    all finished). A cell finished on other data or with other settings than it runs with now
    (``sweep.why_stale``) does not count: it is listed under ``stale`` and runs again."""
    from qtbench.results import EVAL_FILE
    from qtbench.sweep import Cell, why_stale

    algo, task = config.algos[0], config.tasks[0]
    rows, steps, machines = [], set(), set()
    for setting in config.settings:
        per_seed, stale = {}, []
        for seed in config.seeds:
            cell = Cell(algo, task, seed, tuple(sorted(setting.items())))
            path = cell.results_dir(config.results_dir) / EVAL_FILE
            if not path.is_file():
                continue
            if why_stale(cell, config):
                stale.append(seed)
                continue
            record = json.loads(path.read_text())
            steps.add(record.get("train_steps"))
            machines.add(record.get("machine", "?"))
            per_seed[str(seed)] = {k: record[k] for k in ("success_rate", "episodes", "ci95") if k in record}
        done = len(per_seed) == len(config.seeds)
        mean = sum(r["success_rate"] for r in per_seed.values()) / len(per_seed) if done else None
        rows.append({"setting": setting, "label": Cell(algo, task, 0, tuple(sorted(setting.items()))).label,
                     "seeds": per_seed, "stale": stale, "mean": mean})
    finished = all(r["mean"] is not None for r in rows)
    chosen = max(range(len(rows)), key=lambda i: (rows[i]["mean"], -i)) if finished and rows else None
    return {"algo": algo, "task": task, "seeds": list(config.seeds), "steps": sorted(steps, key=str),
            "profile": config.profile, "machines": sorted(machines), "rule": RULE, "settings": rows,
            "chosen": chosen}


def render_section(summary: dict[str, Any], frozen: dict[str, object]) -> str:
    """The benchmarks.md section ``tuning-<algo>``: every setting, its seeds and the choice."""
    from qtbench.benchmarks_md import markdown_table

    algo = summary["algo"]
    header = ["#", "setting", *(f"seed {s} % [Wilson 95%]" for s in summary["seeds"]), "mean %", ""]
    body = []
    for i, row in enumerate(summary["settings"]):
        cells = []
        for seed in summary["seeds"]:
            r = row["seeds"].get(str(seed))
            if r is None:
                stale = seed in row.get("stale", ())
                cells.append("made with other settings or data: runs again" if stale else "not run yet")
                continue
            lo, hi = r.get("ci95", (math.nan, math.nan))
            cells.append(f"{100 * r['success_rate']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] ({r['episodes']} ep)")
        setting = ", ".join(f"{k}={v}" for k, v in row["setting"].items())
        mark = "**chosen**" if i == summary["chosen"] else ("recipe" if i == 0 else "")
        if i == summary["chosen"] and frozen == row["setting"]:
            mark += ", frozen"
        mean = "–" if row["mean"] is None else f"{100 * row['mean']:.1f}"
        body.append([i, f"`{setting}`", *cells, mean, mark])
    if summary["chosen"] is None:
        status = "The search is not finished: `qtbench tune` continues it (finished cells are skipped)."
    elif frozen == summary["settings"][summary["chosen"]]["setting"]:
        status = f"The chosen setting is frozen in `qtbench/tuned.json`: every `{algo}` run starts from it."
    else:
        status = f"The chosen setting is not frozen yet: `qtbench tune --algo {algo} --freeze` records it."
    steps = ", ".join(map(str, summary["steps"])) or "?"
    return "\n".join([
        f"## Tuning `{algo}` (`qtbench tune --algo {algo}`)",
        "",
        f"Rule (the same for every algorithm): at most {MAX_SETTINGS} settings declared beside the config, the "
        f"first the paper's sparse-reward recipe; each trained on `{summary['task']}` with seeds "
        f"{', '.join(map(str, summary['seeds']))} (the default budget unless stated otherwise below); "
        f"chosen: {summary['rule']}. "
        f"Budget: {steps} gradient steps per run, dataset profile {summary['profile']}; "
        f"machine: {'; '.join(summary['machines']) or '?'}. "
        f"Cells: `results/tuning/{algo}/`; summary: `results/tuning/{algo}/{SUMMARY_FILE}`.",
        "",
        markdown_table(header, body),
        "",
        status,
    ])


def run_search(config: Any, executor: Any, benchmarks: Path, show_progress: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """Run the unfinished cells of a search, then write its summary and benchmarks.md section:
    also when it is interrupted, so both show the cells finished so far."""
    from qtbench.atomic import atomic_write_json
    from qtbench.sweep import run_sweep

    try:
        outcomes = run_sweep(config, executor, show_progress=show_progress)
    finally:
        summary = summarise(config)
        atomic_write_json(Path(config.results_dir) / SUMMARY_FILE, summary)
        write_tuning_section(summary, benchmarks)
    return outcomes, summary


def write_tuning_section(summary: dict[str, Any], benchmarks: Path) -> Path:
    from qtbench.benchmarks_md import write_section

    algo = summary["algo"]
    return write_section(f"tuning-{algo}", render_section(summary, reference_overrides(algo)), benchmarks)
