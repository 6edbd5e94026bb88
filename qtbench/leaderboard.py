"""Aggregating every eval.json over seeds into benchmarks.md, a CSV and plots (the
`qtbench leaderboard` command is :mod:`qtbench.cli.leaderboard`).

The headline follows the paper's protocol: one multi-task model per algorithm trained
on task ``all``, success reported per paper category (a category pools the evaluation
episodes of its skills, see ``CATEGORIES``) and their average (the mean of the three
category rates, as in the paper's table). Single-skill runs form a second table, and
runs with config overrides an ablation table: those under ``ablations/<label>/`` (the
sweep's paths, see ``qtbench.results.run_label``) and any run whose stored algorithm
config differs from the current defaults. Runs under ``tuning/`` (``qtbench tune``) are
not leaderboard cells.

Per cell (task, algorithm) we report the mean over seeds, the sample standard deviation
and a 95% t-interval of the mean (n - 1 degrees of freedom); each seed's own binomial
uncertainty is its Wilson interval, kept in eval.json and in the per-seed rows of
leaderboard.csv. Across tasks and seeds we report the field's aggregates
(``qtbench.stats``, rliable): IQM and mean with stratified-bootstrap 95% intervals, the
probability of improvement of each algorithm over ``bc`` with its interval, and
performance profiles. Tables are pandas frames; figures are drawn by ``qtbench.plots``
from the numbers computed here.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from qtbench import stats
from qtbench.algorithms import display_rank, headline_algorithms
from qtbench.envs.instructions import MULTI_TASK, SKILLS
from qtbench.errors import QtbenchError
from qtbench.funnel import PLOT_NAME as FUNNEL_PLOT
from qtbench.funnel import funnel_markdown, funnel_plot

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

AVERAGE = "average"
OVERALL = "success"
CSV_NAME = "leaderboard.csv"
PLOTS_DIR = "plots"
SECTION = "leaderboard"
BASELINE = "bc"  # every algorithm's probability of improvement is stated against this one
# Issue 13's bar: a single-skill cell's 95% t-interval over seeds is at most +-6 points. A task
# with a wider cell gets more seeds for every headline algorithm run on any skill and every other
# algorithm on the task (``underpowered_tasks``), so the algorithms stay paired seed by seed and
# no algorithm gets seeds the others lack.
POWER_HALF_WIDTH = 0.06
SEEDS_PER_EXTENSION = 2
# Who gets those seeds, as the leaderboard and the command say it (``underpowered_tasks``).
EXTENDED_ALGORITHMS = "every headline algorithm run on any skill and every other algorithm on the task"
PRODUCE_HINT = (
    "run `qtbench sweep --algos q_transformer bc iql dt --tasks all` "
    "(or one cell: `qtbench run --algo q_transformer --task drawer_open`)"
)


# ---- per-cell statistics -----------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """One number over seeds: per-seed values and their summary."""

    values: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for fewer than two seeds."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    @property
    def t_half_width(self) -> float:
        """Half-width of the 95% t-interval of the mean across seeds (NaN below two seeds)."""
        return _t_half_width(self.std, self.n) if self.n >= 2 else math.nan

    @property
    def t_interval(self) -> tuple[float, float]:
        """95% t-interval of the mean across seeds (NaN bounds for fewer than two seeds)."""
        return (self.mean - self.t_half_width, self.mean + self.t_half_width)

    def seeds_for(self, half_width: float) -> int | None:
        """How many seeds would bring the 95% t-interval of the mean within ±``half_width`` if
        the seed-to-seed spread stayed at this ``std`` (a projection; None below two seeds)."""
        if self.n < 2:
            return None
        seeds = 2
        while _t_half_width(self.std, seeds) > half_width:
            seeds += 1
        return seeds

    @property
    def ci95(self) -> tuple[float, float]:
        """``t_interval`` clipped to [0, 1] (the values are rates)."""
        lo, hi = self.t_interval
        return (lo, hi) if self.n < 2 else (max(0.0, lo), min(1.0, hi))

    @property
    def interval(self) -> tuple[float, float, float]:
        """(mean, lo, hi): what the plots draw."""
        return (self.mean, *self.ci95)


def _t_half_width(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of ``n`` >= 2 values with sample std ``std``."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def aggregate(values: Iterable[float], seeds: Iterable[int]) -> Aggregate:
    return Aggregate(tuple(float(v) for v in values), tuple(int(s) for s in seeds))


def paired_difference(a: Aggregate, b: Aggregate) -> Aggregate:
    """a minus b on the seeds both have, seed by seed (evaluation episodes are shared per seed)."""
    other = dict(zip(b.seeds, b.values))
    pairs = [(seed, value - other[seed]) for seed, value in zip(a.seeds, a.values) if seed in other]
    return aggregate([d for _, d in pairs], [seed for seed, _ in pairs])


def fmt_difference(agg: Aggregate) -> str:
    """``+mean [lo, hi]`` in percentage points with the unclipped 95% t-interval."""
    if agg.n < 2:
        return "–" if agg.n == 0 else f"{100 * agg.mean:+.1f} (1 seed)"
    lo, hi = agg.t_interval
    return f"{100 * agg.mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def fmt_pct(agg: Aggregate) -> str:
    """``mean ± std [lo, hi]`` in percent; a single seed shows its value only."""
    if agg.n == 0:
        return "–"
    if agg.n == 1:
        return f"{100 * agg.mean:.1f} (1 seed)"
    lo, hi = agg.ci95
    return f"{100 * agg.mean:.1f} ± {100 * agg.std:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


# ---- reading runs ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """One finished cell: its eval.json, its config.json (if any) and where it lives."""

    directory: Path
    task: str
    algo: str
    label: str  # algo, or algo+overrides for ablation runs
    seed: int
    eval: dict[str, Any]
    config: dict[str, Any]


def run_label_of(run_dir: Path, results_dir: Path, algo: str, config: dict[str, Any]) -> str:
    """The row label of a run: its ``ablations/<label>/`` folder, or else algo plus the
    differences of its stored algorithm config from the current defaults.

    The second rule keeps a run made with overrides outside the sweep's ablation paths
    (e.g. ``qtbench run --no-conservative``) out of the reference rows.
    """
    from qtbench.reproduce import config_overrides
    from qtbench.results import ABLATIONS_DIR, run_label

    parts = run_dir.relative_to(results_dir).parts
    if len(parts) >= 5 and parts[0] == ABLATIONS_DIR:
        return parts[1]
    try:
        overrides = config_overrides(algo, config.get("algo_config", {}))
    except QtbenchError as err:
        log.warning("%s: cannot compare its config with %s's defaults (%s)", run_dir, algo, err.problem)
        return algo
    if overrides:
        log.warning("%s was trained with non-default settings %s: listed as a variant", run_dir, overrides)
    return run_label(algo, overrides)


def load_runs(results_dir: Path) -> list[RunRecord]:
    """Every finished cell under ``results_dir`` but the tuning runs and the archive of earlier
    data regimes (unreadable eval.json files are skipped with a warning)."""
    from qtbench.results import ARCHIVE_DIR, CONFIG_FILE, EVAL_FILE, TUNING_DIR

    runs = []
    for path in sorted(Path(results_dir).rglob(EVAL_FILE)):
        if path.relative_to(results_dir).parts[0] in (TUNING_DIR, ARCHIVE_DIR):  # not leaderboard cells
            continue
        try:
            record = json.loads(path.read_text())
            task, algo, seed = record["task"], record["algo"], int(record["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping %s: not a readable eval.json (%s)", path, err)
            continue
        config_path = path.parent / CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        label = run_label_of(path.parent, Path(results_dir), algo, config)
        runs.append(RunRecord(path.parent, task, algo, label, seed, record, config))
    from qtbench.results import data_suffixes

    # runs trained on different data never share a row (their labels get the data regime)
    return [replace(r, label=r.label + s) for r, s in zip(runs, data_suffixes([(r.task, r.config) for r in runs]))]


def skill_counts(record: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """skill -> (successes, episodes), from per_skill, or summed from per_instruction."""
    if record.get("per_skill"):
        return {
            skill: (int(row["successes"]), int(row["episodes"])) for skill, row in record["per_skill"].items()
        }
    from qtbench.envs.instructions import BY_TEXT

    counts: dict[str, tuple[int, int]] = {}
    for text, row in record.get("per_instruction", {}).items():
        s, e = counts.get(BY_TEXT[text].skill, (0, 0))
        counts[BY_TEXT[text].skill] = (s + int(row["successes"]), e + int(row["episodes"]))
    return counts


def category_counts(record: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """paper category -> (successes, episodes) pooled over the category's skills."""
    from qtbench.envs.instructions import CATEGORIES

    skills = skill_counts(record)
    out = {}
    for category, members in CATEGORIES.items():
        present = [skills[s] for s in members if s in skills]
        if present:
            out[category] = (sum(s for s, _ in present), sum(e for _, e in present))
    return out


def category_rates(record: dict[str, Any]) -> dict[str, float]:
    """Success rate per paper category and their unweighted average (the paper's last column)."""
    from qtbench.envs.instructions import CATEGORIES

    counts = category_counts(record)
    rates = {c: s / e for c, (s, e) in counts.items() if e > 0}
    if len(rates) == len(CATEGORIES):
        rates[AVERAGE] = sum(rates.values()) / len(rates)
    return rates


# ---- tables ------------------------------------------------------------------------------
# The columns a row is grouped by. A run's values come from ``run_keys``; a new grouping
# (e.g. a data regime) adds its column here and its value there.
GROUP_COLUMNS: tuple[str, ...] = ("task", "label")


def run_keys(run: RunRecord) -> dict[str, object]:
    """The grouping values of one run (GROUP_COLUMNS)."""
    return {"task": run.task, "label": run.label}


@dataclass(frozen=True)
class Row:
    """One group of seeds (same GROUP_COLUMNS values) with its aggregated columns."""

    task: str
    label: str
    algo: str
    runs: tuple[RunRecord, ...]
    columns: dict[str, Aggregate]

    @cached_property
    def curve(self) -> pd.DataFrame:
        """The learning-curve points of the row's runs (``curve_frame``), built once and read
        by the power check, the curve table and the plots alike."""
        return curve_frame(self.runs)


def _label_key(label: str) -> tuple[float, str]:
    return (display_rank(label.split("+", 1)[0]), label)


def run_columns(run: RunRecord) -> dict[str, tuple[float, int | None, int | None]]:
    """column -> (rate, successes, episodes) of one run: overall success for every run, and for
    a multi-task run its paper categories (pooled episodes), their average and each skill."""
    skills = skill_counts(run.eval)
    out: dict[str, tuple[float, int | None, int | None]] = {
        OVERALL: (float(run.eval["success_rate"]), sum(s for s, _ in skills.values()), int(run.eval.get("episodes", 0)))
    }
    if run.task == MULTI_TASK:
        categories = category_counts(run.eval)
        rates = category_rates(run.eval)
        for name, (s, e) in categories.items():
            out[name] = (rates[name], s, e)
        if AVERAGE in rates:
            out[AVERAGE] = (rates[AVERAGE], None, None)
        for skill, (s, e) in skills.items():
            if e > 0:
                out[skill] = (s / e, s, e)
    return out


def runs_frame(runs: list[RunRecord]) -> pd.DataFrame:
    """Long format: one row per (run, column) with GROUP_COLUMNS, algo, seed, rate, successes, episodes."""
    import pandas as pd
    records = [
        {**run_keys(run), "algo": run.algo, "seed": run.seed, "column": column, "rate": rate,
         "successes": successes, "episodes": episodes}
        for run in runs for column, (rate, successes, episodes) in run_columns(run).items()
    ]
    frame = pd.DataFrame.from_records(
        records, columns=[*GROUP_COLUMNS, "algo", "seed", "column", "rate", "successes", "episodes"])
    return frame.astype({"successes": "Int64", "episodes": "Int64"})


def build_rows(runs: list[RunRecord]) -> list[Row]:
    """Aggregated rows, ordered by task then algorithm: a column per run_columns name."""
    frame = runs_frame(runs)
    by_key = {}
    for run in runs:
        by_key.setdefault(tuple(run_keys(run).values()), []).append(run)
    rows = []
    for key, group in frame.groupby(list(GROUP_COLUMNS), sort=False):
        members = tuple(sorted(by_key[key], key=lambda r: r.seed))
        columns = {}
        for column, values in group.groupby("column", sort=False):
            values = values.sort_values("seed")
            columns[column] = aggregate(values["rate"], values["seed"])
        keys = dict(zip(GROUP_COLUMNS, key))
        rows.append(Row(keys["task"], keys["label"], members[0].algo, members, columns))
    return sorted(rows, key=lambda r: (r.task, _label_key(r.label)))


def _joined(values: Iterable[object]) -> str:
    """The distinct values, comma-separated: numbers in numeric order (seed 10 after 9), then the rest as text."""
    def order(value: object) -> tuple[bool, float, str]:
        number = isinstance(value, numbers.Real)
        return (not number, float(value) if number else 0.0, str(value))

    return ", ".join(str(v) for v in sorted(set(values), key=order))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def describe_setting(rows: list[Row]) -> str:
    """Machine, budget, seeds and episodes of the runs behind a table, stated beside it."""
    runs = [r for row in rows for r in row.runs]
    steps = {row.label: _joined(r.eval.get("train_steps", "?") for r in row.runs) for row in rows}
    budget = (
        next(iter(steps.values())) if len(set(steps.values())) == 1
        else "; ".join(f"{label} {s}" for label, s in steps.items())
    )
    per_instruction = _joined(r.config.get("eval_episodes_per_instruction", "?") for r in runs)
    train_seconds = [r.eval["train_seconds"] for r in runs if "train_seconds" in r.eval]
    mean_train = _duration(sum(train_seconds) / len(train_seconds)) if train_seconds else "?"
    reference = all(r.eval.get("train_steps") == r.config.get("default_steps", -1) for r in runs)
    lines = [
        f"- budget: {budget} gradient steps per run{' (the reference budget)' if reference else ''} "
        f"(dataset profile {_joined(r.eval.get('profile', '?') for r in runs)})",
        f"- seeds: {_joined(r.seed for r in runs)} ({_joined(len(row.runs) for row in rows)} per row)",
        f"- evaluation: {_joined(r.eval.get('episodes', '?') for r in runs)} episodes per run "
        f"({per_instruction} per instruction; the same reset seeds for every algorithm at a given seed)",
        f"- mean training time per run: {mean_train}",
        f"- machine: {_joined(r.eval.get('machine', '?') for r in runs)}",
    ]
    return "\n".join(lines)


def headline_table(rows: list[Row]) -> str:
    from qtbench.benchmarks_md import markdown_table
    from qtbench.paper import PAPER_COLUMNS

    body = [
        [f"`{row.label}`", *(fmt_pct(row.columns.get(c, aggregate([], []))) for c in PAPER_COLUMNS), len(row.runs)]
        for row in rows
    ]
    return markdown_table(["algorithm", *PAPER_COLUMNS, "seeds"], body)


def paper_table() -> str:
    from qtbench.benchmarks_md import markdown_table
    from qtbench.paper import PAPER_CITATION, PAPER_COLUMNS, PAPER_RESULTS

    body = [[name, f"`{ours}`", *(f"{v:.0f}" for v in values)] for name, (ours, values) in PAPER_RESULTS.items()]
    return markdown_table(["method (paper)", "ours", *PAPER_COLUMNS], body) + f"\n\nSource: {PAPER_CITATION}."


def _grid(cells: dict[tuple[str, str], Aggregate], columns: list[str]) -> str:
    """Rows = labels, columns = ``columns``; ``cells`` maps (column, label) to its aggregate."""
    from qtbench.benchmarks_md import markdown_table

    labels = sorted({label for _, label in cells}, key=_label_key)
    body = [[f"`{label}`", *(fmt_pct(cells[(c, label)]) if (c, label) in cells else "–" for c in columns)]
            for label in labels]
    return markdown_table(["algorithm", *columns], body)


def ordered_tasks(names: set[str]) -> list[str]:
    return [t for t in SKILLS if t in names] + sorted(names - set(SKILLS))


def task_table(rows: list[Row]) -> str:
    """Single-skill models: one column per task."""
    return _grid({(r.task, r.label): r.columns[OVERALL] for r in rows}, ordered_tasks({r.task for r in rows}))


def paired_table(rows: list[Row]) -> str | None:
    """Each single-skill reference row minus `bc` on the same task, paired by seed (None without `bc`)."""
    from qtbench.benchmarks_md import markdown_table

    baseline = {r.task: r.columns[OVERALL] for r in rows if r.label == BASELINE}
    body = []
    for r in rows:
        if r.label != BASELINE and r.task in baseline:
            diff = paired_difference(r.columns[OVERALL], baseline[r.task])
            if diff.n:
                body.append([r.task, f"`{r.label}`", fmt_difference(diff), ", ".join(map(str, diff.seeds))])
    return markdown_table(["task", "algorithm", f"minus `{BASELINE}`, points [95% t-interval]", "seeds"], body) if body else None


@dataclass(frozen=True)
class Underpowered:
    """A single-skill task with a reference cell wider than POWER_HALF_WIDTH, and the sweep that
    gives it more seeds."""

    task: str
    # (algorithm, interval half-width, seeds that would bring it within the bar at its spread,
    # what its learning curve did at the budget (budget_verdict); NaN and None below 2 seeds)
    cells: tuple[tuple[str, float, int | None, str | None], ...]
    algos: tuple[str, ...]  # the algorithms that get the seeds (underpowered_tasks), in leaderboard order
    seeds: tuple[int, ...]  # the seeds every algorithm on the task should have next
    results_dir: Path = Path("results")  # where the cells live (named in the command unless the default)

    @property
    def command(self) -> str:
        where = "" if self.results_dir == Path("results") else f" --results-dir {self.results_dir}"
        return (f"qtbench sweep --algos {' '.join(self.algos)} --tasks {self.task} "
                f"--seeds {' '.join(map(str, self.seeds))}{where}")

    def describe(self) -> str:
        def cell(algo: str, width: float, seeds: int | None, curve: str | None) -> str:
            if not seeds:
                return f"`{algo}` (1 seed)"
            moving = f"; {curve} at its budget" if curve in (CLIMBING, FALLING) else ""
            return f"`{algo}` ±{100 * width:.1f} ({seeds} seeds at this spread{moving})"

        wide = ", ".join(cell(*c) for c in self.cells)
        return f"{self.task}: {wide}; `{self.command}`"


def underpowered_tasks(rows: list[Row], results_dir: Path = Path("results")) -> list[Underpowered]:
    """Single-skill tasks whose reference rows (``rows``: algorithms at their defaults) include
    one whose 95% t-interval of the mean is wider than POWER_HALF_WIDTH, each with the seeds
    that come next for every headline algorithm (the sweep's default) run on any skill, so a
    task only some of them reached gets the others too, and for every other algorithm already
    on the task (an extra baseline run on one task is not asked for on the rest): while one
    of them lacks on the task a seed that another has (or a comparison seed), those seeds, so
    the comparison is complete and paired before it grows; then SEEDS_PER_EXTENSION new seeds."""
    from qtbench.tuning import COMPARISON_SEEDS

    reference = [r for r in rows if r.task != MULTI_TASK and r.label == r.algo]
    headline = {r.algo for r in reference} & set(headline_algorithms())
    out = []
    for task in ordered_tasks({r.task for r in reference}):
        members = {r.algo: r for r in reference if r.task == task}
        algos = tuple(sorted(headline | set(members), key=_label_key))
        overall = {a: r.columns[OVERALL] for a, r in members.items()}
        wide = tuple((a, col.t_half_width, col.seeds_for(POWER_HALF_WIDTH),
                      budget_verdict(last_gain(members[a].curve)))
                     for a, col in overall.items()
                     if math.isnan(col.t_half_width) or col.t_half_width > POWER_HALF_WIDTH)
        if not wide:
            continue
        every = set(COMPARISON_SEEDS) | {run.seed for r in members.values() for run in r.runs}
        complete = all(a in members and {run.seed for run in members[a].runs} == every for a in algos)
        seeds = range(max(every) + 1, max(every) + 1 + SEEDS_PER_EXTENSION) if complete else sorted(every)
        out.append(Underpowered(task, wide, algos, tuple(seeds), Path(results_dir)))
    return out


def skill_table(rows: list[Row]) -> str:
    """Multi-task models broken down per skill (the categories merge open and close)."""
    cells = {(skill, r.label): r.columns[skill] for r in rows for skill in SKILLS if skill in r.columns}
    return _grid(cells, ordered_tasks({skill for skill, _ in cells}))


# What a curve did over its last evaluation interval (``budget_verdict``).
CLIMBING = "still climbing"
FALLING = "falling"
UNRESOLVED = "no change resolved"


def last_gain(frame: pd.DataFrame) -> Aggregate:
    """Each seed's success at its curve's last step minus at the step before, paired by seed
    (seeds with fewer than two points left out): how much the end of the budget still moved."""
    values, seeds = [], []
    if frame.empty:
        return aggregate(values, seeds)
    for seed, points in frame.sort_values("step").groupby("seed"):
        if len(points) >= 2:
            rates = points["success_rate"].to_numpy()
            values.append(rates[-1] - rates[-2])
            seeds.append(seed)
    return aggregate(values, seeds)


def budget_verdict(gain: Aggregate) -> str | None:
    """CLIMBING when ``gain``'s 95% t-interval lies above 0, FALLING below it, else UNRESOLVED
    (None below two seeds)."""
    if gain.n < 2:
        return None
    lo, hi = gain.t_interval
    return CLIMBING if lo > 0 else FALLING if hi < 0 else UNRESOLVED


def curve_table(rows: list[Row]) -> str | None:
    """Each row's learning curve pooled over its seeds: success at every evaluation step, the
    step where it peaked, and whether the last interval still moved it (None when no run has
    a curve)."""
    from qtbench.benchmarks_md import markdown_table

    body = []
    for row in rows:
        frame = row.curve
        if frame.empty:
            continue
        pooled = frame.groupby("step")[["successes", "episodes"]].sum()
        rates = 100 * pooled["successes"] / pooled["episodes"]
        points = " · ".join(f"{step}: {rate:.0f}" for step, rate in rates.items())
        gain = last_gain(frame)
        body.append([row.task, f"`{row.label}`", points, int(rates.idxmax()), fmt_difference(gain),
                     budget_verdict(gain) or "–",
                     _joined(int(n) for n in pooled["episodes"]), _joined(frame["seed"].unique())])
    header = ["task", "algorithm", "success % at each evaluated gradient step", "peak at step",
              "last interval's gain, points [95% CI]", "at the budget", "episodes per point", "seeds"]
    return markdown_table(header, body) if body else None


def ablation_rows(rows: list[Row]) -> list[Row]:
    """Ablated variants together with the unablated reference run of the same task and algorithm."""
    variants = {(r.task, r.algo) for r in rows if r.label != r.algo}
    return [r for r in rows if (r.task, r.algo) in variants]


def ablation_table(rows: list[Row]) -> str:
    """Each variant's and its reference's success, naming their seeds: a variant run on other
    seeds than its reference (e.g. the tuning seeds) is not a paired comparison."""
    from qtbench.benchmarks_md import markdown_table

    body = []
    for row in rows:
        steps = float(np.mean([r.eval.get("train_steps", 0) for r in row.runs]))
        seconds = float(np.mean([r.eval.get("train_seconds", 0.0) for r in row.runs]))
        rate = steps / seconds if seconds else math.nan
        body.append([row.task, f"`{row.label}`", fmt_pct(row.columns[OVERALL]), _joined(r.seed for r in row.runs),
                     f"{steps:.0f}", f"{seconds / 60:.1f}", f"{rate:.1f}"])
    header = ["task", "variant", "success % (mean ± std [95% CI])", "seeds", "gradient steps", "train min", "steps/s"]
    return markdown_table(header, body)


# ---- aggregates across tasks (rliable) ----------------------------------------------------
@dataclass(frozen=True)
class AggregateRow:
    """One algorithm's scores over tasks and seeds, with the field's aggregate statistics."""

    label: str
    scores: np.ndarray  # (seeds, tasks) success rates
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    iqm: stats.Estimate
    mean: stats.Estimate
    improvement: stats.Estimate | None  # P(this > BASELINE) on the baseline's tasks; None without a baseline


def score_matrix(frame: pd.DataFrame, tasks: list[str]) -> tuple[np.ndarray, tuple[int, ...]]:
    """(seeds x tasks) rates from a frame with seed, column and rate; only seeds that have every task."""
    table = frame.pivot_table(index="seed", columns="column", values="rate").reindex(columns=tasks).dropna()
    return table.to_numpy(dtype=np.float64), tuple(int(s) for s in table.index)


def aggregate_rows(frame: pd.DataFrame, per_task: str) -> list[AggregateRow]:
    """IQM, mean and probability of improvement over BASELINE for each reference algorithm,
    over the tasks it shares with BASELINE, so its probability of improvement pairs the two on
    exactly those (BASELINE's own row: every task another algorithm shares with it; without
    BASELINE or a shared task, an algorithm's own tasks). An extra algorithm run on one task is
    then aggregated over that task alone instead of narrowing every row to it; rows over other
    tasks (their ``tasks``) are not comparable with each other, only each with BASELINE.

    ``frame`` is runs_frame of the reference runs; ``per_task`` says what a task is: "skill"
    (the skill columns of task-``all`` runs: one multi-task model, scored per skill) or
    "task" (the overall success of single-skill runs: one model per task).
    """
    if per_task == "skill":
        frame = frame[(frame["task"] == MULTI_TASK) & frame["column"].isin(SKILLS)]
    else:
        frame = frame[(frame["task"] != MULTI_TASK) & (frame["column"] == OVERALL)].assign(column=lambda f: f["task"])
    own = {label: ordered_tasks(set(group["column"])) for label, group in frame.groupby("label")}
    with_baseline = {label: [t for t in ts if t in own.get(BASELINE, ())] for label, ts in own.items()
                     if label != BASELINE}
    tasks = {label: shared or own[label] for label, shared in with_baseline.items()}
    if BASELINE in own:
        compared = {t for shared in with_baseline.values() for t in shared}
        tasks[BASELINE] = [t for t in own[BASELINE] if t in compared] or own[BASELINE]
    baseline = frame[frame["label"] == BASELINE]
    rows = []
    for label in sorted(tasks, key=_label_key):
        scores, seeds = score_matrix(frame[frame["label"] == label], tasks[label])
        if not len(seeds):
            continue
        improvement = None
        common = [t for t in tasks[label] if t in tasks.get(BASELINE, [])]
        if common and label != BASELINE:
            x, _ = score_matrix(frame[frame["label"] == label], common)
            y, _ = score_matrix(baseline, common)
            if len(x) and len(y):
                improvement = stats.probability_of_improvement(x, y)
        rows.append(AggregateRow(label, scores, seeds, tuple(tasks[label]), stats.iqm(scores), stats.mean(scores),
                                 improvement))
    return rows


def _fmt_estimate(estimate: stats.Estimate | None, percent: bool = True) -> str:
    if estimate is None:
        return "–"
    scale, digits = (100, 1) if percent else (1, 2)
    text = f"{scale * estimate.point:.{digits}f}"
    if estimate.has_interval:
        text += f" [{scale * estimate.lo:.{digits}f}, {scale * estimate.hi:.{digits}f}]"
    return text


def aggregate_table(rows: list[AggregateRow]) -> str:
    from qtbench.benchmarks_md import markdown_table

    body = [
        [f"`{r.label}`", _fmt_estimate(r.iqm), _fmt_estimate(r.mean), _fmt_estimate(r.improvement, percent=False),
         "–" if r.improvement is None else stats.beats(r.improvement), len(r.seeds), ", ".join(r.tasks)]
        for r in rows
    ]
    header = ["algorithm", "IQM % [95% CI]", "mean % [95% CI]", f"P(improvement over `{BASELINE}`) [95% CI]",
              f"beats `{BASELINE}`?", "seeds", "tasks"]
    return markdown_table(header, body)


AGGREGATE_NOTE = (
    "with [rliable](https://github.com/google-research/rliable) (Agarwal et al., 2021): "
    "interquartile mean (IQM) and mean of the per-task success rates, "
    f"and the probability that a run of the algorithm beats a run of `{BASELINE}` on the same task "
    "(0.5: no difference), each with a 95% stratified-bootstrap interval "
    f"({stats.BOOTSTRAP_REPS} resamples of the seeds within each task; none with a single seed). "
    f"`beats {BASELINE}?` reads that interval: yes when it lies above 0.5, no (worse) when below, "
    "not resolved when it contains 0.5. With few seeds per task the bootstrap understates the "
    f"uncertainty (it can only resample the runs it has: at 3 seeds, runs all below `{BASELINE}`'s give "
    "[0.00, 0.00] where a paired t-interval may still contain 0), so read it beside the per-task "
    "intervals."
)


# ---- figures -----------------------------------------------------------------------------
def curve_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """The learning-curve points of runs (eval.json's learning_curve), with their seed."""
    import pandas as pd
    from qtbench.results import CURVE_KEY

    frames = [pd.DataFrame(run.eval[CURVE_KEY]).assign(seed=run.seed) for run in runs if run.eval.get(CURVE_KEY)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _loss_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from qtbench.results import read_losses

    try:
        losses = read_losses(path)
    except (OSError, ValueError) as err:
        log.warning("no loss curve from %s (%s)", path, err)
        return np.array([]), np.array([])
    return losses.index.to_numpy(), losses.to_numpy()


def write_plots(rows: list[Row], aggregates: dict[str, list[AggregateRow]], out_dir: Path) -> list[Path]:
    """Every leaderboard figure; returns the files written."""
    from qtbench import plots
    from qtbench.paper import PAPER_COLUMNS, PAPER_RESULTS
    from qtbench.results import METRICS_FILE

    written: list[Path | None] = []
    reference = [r for r in rows if r.label == r.algo]
    headline = {r.label: {c: a.interval for c, a in r.columns.items()} for r in reference if r.task == MULTI_TASK}
    if headline:
        paper = {ours: dict(zip(PAPER_COLUMNS, values)) for ours, values in PAPER_RESULTS.values()}
        written.append(plots.bar_chart(headline, list(PAPER_COLUMNS), out_dir / "categories_all.png",
                                       "multi-task models (task all): success per paper category", reference=paper))
    single = [r for r in reference if r.task != MULTI_TASK]
    if single:
        series: dict[str, dict[str, plots.Interval]] = {}
        for r in single:
            series.setdefault(r.label, {})[r.task] = r.columns[OVERALL].interval
        written.append(plots.bar_chart(series, ordered_tasks({r.task for r in single}), out_dir / "tasks.png",
                                       "single-skill models: success per task"))
    for name, agg in aggregates.items():
        if not agg:
            continue
        estimates = {a.label: {"IQM": (a.iqm.point, a.iqm.lo, a.iqm.hi), "mean": (a.mean.point, a.mean.lo, a.mean.hi)}
                     for a in agg}
        written.append(plots.interval_estimates(estimates, ["IQM", "mean"], out_dir / f"aggregates_{name}.png",
                                                f"{AGGREGATE_TITLES[name]}: IQM and mean (95% CI)"))
        profiles = {a.label: stats.performance_profile(a.scores) for a in agg}
        written.append(plots.performance_profiles(profiles, stats.PROFILE_THRESHOLDS,
                                                  out_dir / f"performance_profile_{name}.png",
                                                  f"{AGGREGATE_TITLES[name]}: performance profile"))
    for task in sorted({r.task for r in rows}):
        here = [r for r in rows if r.task == task]
        curves = {r.label: r.curve for r in here}
        written.append(plots.success_curves(curves, out_dir / f"success_curves_{task}.png",
                                            f"learning curves, task {task} (subset of the evaluation episodes)"))
        losses = {r.label: {run.seed: _loss_curve(run.directory / METRICS_FILE) for run in r.runs
                            if (run.directory / METRICS_FILE).is_file()} for r in here}
        written.append(plots.loss_curves(losses, out_dir / f"learning_curves_{task}.png", f"training loss, task {task}"))
    return [p for p in written if p is not None]


AGGREGATE_TITLES = {"all": "multi-task models, per skill", "single": "single-skill models"}


# ---- the section, the CSV and the command -------------------------------------------------
def collection_policy_table(results_dir: Path) -> str | None:
    """Each task's collection policy (written by ``qtbench data eval-policy``) on the same
    evaluation episodes as the runs: mean over seeds as in the rows above, and the pooled
    episodes' Wilson interval; None when no task has one. A task scored with the multi-task
    policy too (``--policy-task all``) gets that row below its own policy's."""
    from qtbench.benchmarks_md import markdown_table
    from qtbench.collection_policy import EVAL_RECORDS
    from qtbench.data.hashing import HASH_PREFIX
    from qtbench.results import wilson_interval

    body = []
    for path in sorted(Path(results_dir).glob(f"*/{EVAL_RECORDS}")):
        try:
            record = json.loads(path.read_text())
            per_seed, policy = record["seeds"], record["policy"]
            seeds = sorted(per_seed, key=int)
            cell = aggregate([per_seed[k]["success_rate"] for k in seeds], map(int, seeds))
            successes = sum(s for k in seeds for s, _ in skill_counts(per_seed[k]).values())
            episodes = sum(per_seed[k]["episodes"] for k in seeds)
            weights = policy["weights_hash"].removeprefix(HASH_PREFIX)[:8]
            label = f"`{policy['algo']}` step {policy['step']}, weights {weights}"
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping %s: not a readable collection-policy record (%s); "
                        "rewrite it with `qtbench data eval-policy`", path, err)
            continue
        lo, hi = wilson_interval(successes, episodes)
        body.append([record["task"], record.get("policy_task", record["task"]), fmt_pct(cell),
                     f"{successes}/{episodes} [{100 * lo:.1f}, {100 * hi:.1f}]", _joined(seeds), label])
    if not body:
        return None
    return markdown_table(["task", "policy trained on", "success over seeds", "pooled episodes [95% Wilson]", "seeds",
                           "policy"], body)


def render_markdown(runs: list[RunRecord], figures: Iterable[str] = (),
                    aggregates: dict[str, list[AggregateRow]] | None = None, collectors: str | None = None,
                    results_dir: Path = Path("results"), rows: list[Row] | None = None,
                    underpowered: list[Underpowered] | None = None) -> str:
    """The benchmarks.md leaderboard section; ``figures`` are image paths relative to the markdown file;
    ``collectors`` is collection_policy_table's table; ``results_dir`` is named in the commands it prints.
    ``aggregates``, ``rows`` and ``underpowered`` are computed from ``runs`` unless the caller
    (``write_leaderboard``) already has them."""
    rows = build_rows(runs) if rows is None else rows
    aggregates = compute_aggregates(runs) if aggregates is None else aggregates
    reference = [r for r in rows if r.label == r.algo]
    headline = [r for r in reference if r.task == MULTI_TASK]
    per_task = [r for r in reference if r.task != MULTI_TASK]
    ablations = ablation_rows(rows)
    parts = [
        "## Leaderboard",
        "",
        "Written by `qtbench leaderboard` from every `eval.json` under the results directory. "
        "Success rates in percent: mean ± standard deviation over seeds, [95% t-interval of the "
        "mean across seeds]; each seed's Wilson 95% interval is in its eval.json and in "
        "`leaderboard.csv`.",
        "",
        "### Multi-task models (task `all`), per paper category",
        "",
        "One language-conditioned model per algorithm trained on every instruction, as in the "
        "paper. A category pools the evaluation episodes of its skills; `average` is the mean of "
        "the three categories, as in the paper's table.",
        "",
    ]
    if headline:
        parts += [headline_table(headline), "", describe_setting(headline), "",
                  "The same models per skill:", "", skill_table(headline)]
        if aggregates.get("all"):
            parts += ["", "Aggregated over the four skills and the seeds " + AGGREGATE_NOTE, "",
                      aggregate_table(aggregates["all"])]
    elif any(r.task == MULTI_TASK for r in rows):
        parts += ["The runs on task `all` all differ from the algorithms' current default settings "
                  "(they are listed as variants below): re-run them with "
                  "`qtbench sweep --tasks all --force` for the reference rows."]
    else:
        parts += ["No runs on task `all` yet: `qtbench sweep --tasks all` produces them."]
    parts += ["", "For reference, the paper's real-robot results (percent; a different, physical "
              "setting — compare rankings, not numbers):", "", paper_table()]
    if per_task:
        parts += ["", "### Single-skill models (one model per task)", "", task_table(per_task), "",
                  describe_setting(per_task)]
        paired = paired_table(per_task)
        if paired:
            parts += ["", f"Each algorithm minus `{BASELINE}` on the same task, seed by seed (every algorithm "
                      "meets the same evaluation episodes at a given seed), with the 95% t-interval of the "
                      "mean difference:", "", paired]
        if aggregates.get("single"):
            parts += ["", f"Each algorithm aggregated over the tasks it shares with `{BASELINE}` (the `tasks` "
                      "column: rows over other tasks compare each with `bc`, not with each other) and the seeds "
                      + AGGREGATE_NOTE, "", aggregate_table(aggregates["single"])]
        wide = underpowered_tasks(rows, results_dir) if underpowered is None else underpowered
        if wide:
            parts += ["", f"Cells wider than ±{100 * POWER_HALF_WIDTH:.0f} points (the protocol's bar). Such a "
                      f"task first gets, for {EXTENDED_ALGORITHMS}, the seeds any of them has there "
                      f"(and the comparison seeds); then {SEEDS_PER_EXTENSION} more seeds for all of them, so "
                      "comparisons stay paired. In brackets, the seeds a cell would need for the bar if its "
                      "seed-to-seed spread stayed as measured, and whether its learning curve was still moving "
                      "at the budget (see Learning curves; a cell still climbing there spreads partly by how far "
                      "each seed got, which more seeds average but do not remove):", "", *(f"- {u.describe()}" for u in wide)]
    curves = curve_table(reference)
    if curves:
        parts += ["", "### Learning curves", "",
                  "Success during training on a fixed subset of each seed's evaluation episodes, pooled over the "
                  "seeds (the plots below show each seed). The last step is the budget. A point pooling n episodes "
                  "has a 95% interval of at most ±98/√n points (±10 at 90 episodes, ±5 at 396), so a curve has "
                  "flattened where its last points lie within that of each other; one still climbing at its last "
                  "point is not converged, and one that peaked well before it loses by training longer. The last "
                  "interval's gain is each seed's success at the last step minus at the one before, paired by "
                  f"seed, with its 95% t-interval: `{CLIMBING}` when that lies above 0 (a longer budget would "
                  f"likely score higher), `{FALLING}` when below, `{UNRESOLVED}` when it contains 0.", "",
                  curves]
    if collectors:
        parts += ["", "The policy that collected each task's failures (the `bc` baseline trained on the "
                  "demos with learner seed 10000 + data seed; written by `qtbench data eval-policy`), on the "
                  "same evaluation episodes as the runs of each seed. A row whose policy was trained on `all` "
                  "below a single task's own scores the suite's multi-task collection policy on that task's "
                  "episodes (`--policy-task all`), the measurement behind one collection policy per task "
                  "(README, Datasets):", "", collectors]
    if ablations:
        parts += ["", "### Ablations", "",
                  "Variants trained with config overrides (the paper's Q-Transformer ablations come from "
                  "`qtbench sweep --ablations`, under `ablations/<variant>/`), beside the reference run "
                  "of the same algorithm and task: success, gradient steps and the training time they took.", "",
                  ablation_table(ablations), "", describe_setting(ablations)]
    parts += ["", funnel_markdown(_funnel_entries(rows))]
    figures = list(figures)
    if figures:
        parts += ["", "### Figures", "",
                  "Bars: mean over seeds with the 95% t-interval; black diamonds: the paper's real-robot "
                  "numbers. Aggregates and performance profiles: rliable's plots with 95% stratified-bootstrap "
                  "intervals. Success curves: success on a fixed subset of the evaluation episodes at a few "
                  "points of training, against gradient step and training wall-clock (thin: seeds, thick: "
                  "their mean; runs made before learning curves existed have none). Loss curves: training "
                  "loss per seed from metrics.csv.", ""]
        parts += ["\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)]
    return "\n".join(parts) + "\n"


def compute_aggregates(runs: list[RunRecord]) -> dict[str, list[AggregateRow]]:
    """The rliable aggregates of the reference runs: "all" per skill, "single" per task."""
    frame = runs_frame([r for r in runs if r.label == r.algo])
    return {"all": aggregate_rows(frame, "skill"), "single": aggregate_rows(frame, "task")}


def _funnel_entries(rows: list[Row]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(task, label, seed, eval.json) of every run, in the leaderboard's row order."""
    return [(r.task, r.label, r.seed, r.eval) for row in rows for r in row.runs]


def leaderboard_frame(runs: list[RunRecord], rows: list[Row]) -> pd.DataFrame:
    """The CSV's table, long format: one row per (group, column) for the mean over seeds, and one per seed.

    Mean rows carry the t-interval across seeds (empty for a single seed), seed rows the
    seed's Wilson interval (the average of categories has no counts, so no interval). ``rows``
    are ``build_rows(runs)``, built once by the caller.
    """
    import pandas as pd
    from qtbench.results import wilson_interval

    frame = runs_frame(runs)
    means, seeds = [], []
    for row in rows:
        steps = _joined(r.eval.get("train_steps", "") for r in row.runs)
        for column, agg in row.columns.items():
            lo, hi = agg.ci95
            means.append({"task": row.task, "algorithm": row.label, "algo": row.algo, "column": column,
                          "scope": "mean", "seeds": " ".join(map(str, agg.seeds)), "n_seeds": agg.n,
                          "mean": agg.mean, "std": agg.std, "ci95_lo": lo, "ci95_hi": hi, "train_steps": steps})
    steps_of = {(r.task, r.label, r.seed): r.eval.get("train_steps", "") for r in runs}
    for record in frame.itertuples(index=False):
        counted = not pd.isna(record.episodes)
        lo, hi = wilson_interval(int(record.successes), int(record.episodes)) if counted else (math.nan, math.nan)
        seeds.append({"task": record.task, "algorithm": record.label, "algo": record.algo, "column": record.column,
                      "scope": "seed", "seeds": str(record.seed), "n_seeds": 1, "mean": record.rate,
                      "ci95_lo": lo, "ci95_hi": hi, "successes": record.successes, "episodes": record.episodes,
                      "train_steps": steps_of[(record.task, record.label, record.seed)]})
    header = ["task", "algorithm", "algo", "column", "scope", "seeds", "n_seeds", "mean", "std",
              "ci95_lo", "ci95_hi", "successes", "episodes", "train_steps"]
    table = pd.DataFrame(means + seeds, columns=header)
    return table.astype({"successes": "Int64", "episodes": "Int64"})


@dataclass(frozen=True)
class LeaderboardFiles:
    """What ``write_leaderboard`` wrote, and the rows and aggregates it wrote them from (so the
    command prints its summary without reading the runs or bootstrapping again)."""

    benchmarks: Path
    csv: Path
    plots: tuple[Path, ...]
    runs: int
    rows: list[Row]
    aggregates: dict[str, list[AggregateRow]]
    underpowered: list[Underpowered]  # single-skill tasks wider than the bar, with the seeds that come next


def write_leaderboard(
    results_dir: Path = Path("results"), benchmarks: Path = Path("benchmarks.md"), plots: bool = True
) -> LeaderboardFiles:
    """Read every eval.json under ``results_dir``; write the benchmarks.md section, CSV and plots."""
    from qtbench.atomic import atomic_write_text
    from qtbench.benchmarks_md import write_section

    results_dir = Path(results_dir)
    runs = load_runs(results_dir) if results_dir.is_dir() else []
    if not runs:
        raise QtbenchError(f"no results found: no eval.json under {results_dir}/", PRODUCE_HINT)
    aggregates = compute_aggregates(runs)
    rows = build_rows(runs)
    underpowered = underpowered_tasks(rows, results_dir)
    images: tuple[Path, ...] = ()
    if plots:
        images = tuple(write_plots(rows, aggregates, results_dir / PLOTS_DIR))
        funnels = funnel_plot(_funnel_entries(rows), results_dir / PLOTS_DIR / FUNNEL_PLOT)
        images += (funnels,) if funnels else ()
    figures = [Path(os.path.relpath(p, Path(benchmarks).resolve().parent)).as_posix() for p in map(Path.resolve, images)]
    section = render_markdown(runs, figures, aggregates, collection_policy_table(results_dir), results_dir,
                              rows, underpowered)
    write_section(SECTION, section, benchmarks)
    table = leaderboard_frame(runs, rows).to_csv(index=False, lineterminator="\n")
    csv_path = atomic_write_text(results_dir / CSV_NAME, table)
    return LeaderboardFiles(Path(benchmarks), csv_path, images, len(runs), rows, aggregates, underpowered)
