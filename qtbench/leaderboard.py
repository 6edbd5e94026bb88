"""`qtbench leaderboard`: aggregate every eval.json over seeds into benchmarks.md, a CSV and plots.

The headline follows the paper's protocol: one multi-task model per algorithm trained
on task ``all``, success reported per paper category (a category pools the evaluation
episodes of its skills, see ``CATEGORIES``) and their average (the mean of the three
category rates, as in the paper's table). Single-skill runs form a second table, and
runs with config overrides an ablation table: those under ``ablations/<label>/`` (the
sweep's paths, see ``qtbench.results.run_label``) and any run whose stored algorithm
config differs from the current defaults.

Across seeds we report mean, sample standard deviation and a 95% t-interval of the
mean (n - 1 degrees of freedom); each seed's own binomial uncertainty is its Wilson
interval, kept in eval.json and in the per-seed rows of leaderboard.csv.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

HEADLINE_TASK = "all"
SINGLE_TASKS = ("drawer_open", "drawer_close", "pick_place", "move_near")
AVERAGE = "average"
OVERALL = "success"
CSV_NAME = "leaderboard.csv"
PLOTS_DIR = "plots"
SECTION = "leaderboard"
# Display order of algorithms; others follow alphabetically.
ALGO_ORDER = ("q_transformer", "dt", "iql", "bc", "cql")
PRODUCE_HINT = (
    "run `qtbench sweep --algos q_transformer bc iql dt --tasks all --seeds 0 1 2` "
    "(or one cell: `qtbench run --algo q_transformer --task drawer_open`)"
)


# ---- statistics --------------------------------------------------------------------------
def _t_cdf(x: float, df: int) -> float:
    """Student-t CDF for x >= 0 by Simpson integration of the density (no scipy needed)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    n = 2000
    h = x / n
    total = 0.0
    for i in range(n + 1):
        t = i * h
        weight = 1 if i in (0, n) else (4 if i % 2 else 2)
        total += weight * math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
    return 0.5 + total * h / 3


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection."""
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


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
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for fewer than two seeds."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def ci95(self) -> tuple[float, float]:
        """95% t-interval of the mean across seeds, clipped to [0, 1] (the values are rates).

        NaN bounds for fewer than two seeds.
        """
        if self.n < 2:
            return (math.nan, math.nan)
        half = t_quantile(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return (max(0.0, self.mean - half), min(1.0, self.mean + half))


def aggregate(values: Iterable[float], seeds: Iterable[int]) -> Aggregate:
    return Aggregate(tuple(float(v) for v in values), tuple(int(s) for s in seeds))


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
    """Every finished cell under ``results_dir`` (unreadable eval.json files are skipped with a warning)."""
    runs = []
    for path in sorted(Path(results_dir).rglob("eval.json")):
        try:
            record = json.loads(path.read_text())
            task, algo, seed = record["task"], record["algo"], int(record["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping %s: not a readable eval.json (%s)", path, err)
            continue
        config_path = path.parent / "config.json"
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
@dataclass(frozen=True)
class Row:
    """One (task, label) group of seeds with its aggregated columns."""

    task: str
    label: str
    algo: str
    runs: tuple[RunRecord, ...]
    columns: dict[str, Aggregate]


def _label_key(label: str) -> tuple[int, str]:
    algo = label.split("+", 1)[0]
    rank = ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER)
    return (rank, label)


def group_runs(runs: list[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.task, run.label), []).append(run)
    ordered = sorted(groups, key=lambda k: (k[0], _label_key(k[1])))
    return {k: sorted(groups[k], key=lambda r: r.seed) for k in ordered}


def _seed_rates(record: dict[str, Any]) -> dict[str, float]:
    """A multi-task run's rates per paper category (and average) and per skill."""
    skills = {skill: s / e for skill, (s, e) in skill_counts(record).items() if e > 0}
    return {**category_rates(record), **skills}


def build_rows(runs: list[RunRecord]) -> list[Row]:
    """Aggregated rows: overall success for every group, plus categories and skills for task ``all``."""
    rows = []
    for (task, label), members in group_runs(runs).items():
        seeds = [r.seed for r in members]
        columns = {OVERALL: aggregate((r.eval["success_rate"] for r in members), seeds)}
        if task == HEADLINE_TASK:
            per_seed = [_seed_rates(r.eval) for r in members]
            for name in sorted({k for rates in per_seed for k in rates}):
                have = [(rates[name], r.seed) for rates, r in zip(per_seed, members) if name in rates]
                columns[name] = aggregate((v for v, _ in have), (s for _, s in have))
        rows.append(Row(task, label, members[0].algo, tuple(members), columns))
    return rows


def _joined(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in sorted(set(values), key=str))


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
        f"({per_instruction} per instruction)",
        f"- mean training time per run: {mean_train}",
        f"- machine: {_joined(r.eval.get('machine', '?') for r in runs)}",
    ]
    return "\n".join(lines)


def headline_table(rows: list[Row]) -> str:
    from qtbench.paper import PAPER_COLUMNS
    from qtbench.report import markdown_table

    body = [
        [f"`{row.label}`", *(fmt_pct(row.columns.get(c, aggregate([], []))) for c in PAPER_COLUMNS), len(row.runs)]
        for row in rows
    ]
    return markdown_table(["algorithm", *PAPER_COLUMNS, "seeds"], body)


def paper_table() -> str:
    from qtbench.paper import PAPER_CITATION, PAPER_COLUMNS, PAPER_RESULTS
    from qtbench.report import markdown_table

    body = [[name, f"`{ours}`", *(f"{v:.0f}" for v in values)] for name, (ours, values) in PAPER_RESULTS.items()]
    return markdown_table(["method (paper)", "ours", *PAPER_COLUMNS], body) + f"\n\nSource: {PAPER_CITATION}."


def _grid(cells: dict[tuple[str, str], Aggregate], columns: list[str]) -> str:
    """Rows = labels, columns = ``columns``; ``cells`` maps (column, label) to its aggregate."""
    from qtbench.report import markdown_table

    labels = sorted({label for _, label in cells}, key=_label_key)
    body = [[f"`{label}`", *(fmt_pct(cells[(c, label)]) if (c, label) in cells else "–" for c in columns)]
            for label in labels]
    return markdown_table(["algorithm", *columns], body)


def ordered_tasks(names: set[str]) -> list[str]:
    return [t for t in SINGLE_TASKS if t in names] + sorted(names - set(SINGLE_TASKS))


def task_table(rows: list[Row]) -> str:
    """Single-skill models: one column per task."""
    return _grid({(r.task, r.label): r.columns[OVERALL] for r in rows}, ordered_tasks({r.task for r in rows}))


def skill_table(rows: list[Row]) -> str:
    """Multi-task models broken down per skill (the categories merge open and close)."""
    cells = {(skill, r.label): r.columns[skill] for r in rows for skill in SINGLE_TASKS if skill in r.columns}
    return _grid(cells, ordered_tasks({skill for skill, _ in cells}))


def ablation_rows(rows: list[Row]) -> list[Row]:
    """Ablated variants together with the unablated reference run of the same task and algorithm."""
    variants = {(r.task, r.algo) for r in rows if r.label != r.algo}
    return [r for r in rows if (r.task, r.algo) in variants]


def ablation_table(rows: list[Row]) -> str:
    from qtbench.report import markdown_table

    body = []
    for row in rows:
        steps = [r.eval.get("train_steps", 0) for r in row.runs]
        seconds = [r.eval.get("train_seconds", 0.0) for r in row.runs]
        mean_steps = sum(steps) / len(steps)
        mean_seconds = sum(seconds) / len(seconds)
        rate = mean_steps / mean_seconds if mean_seconds else math.nan
        body.append([
            row.task, f"`{row.label}`", fmt_pct(row.columns[OVERALL]), len(row.runs),
            f"{mean_steps:.0f}", f"{mean_seconds / 60:.1f}", f"{rate:.1f}",
        ])
    header = ["task", "variant", "success % (mean ± std [95% CI])", "seeds", "gradient steps", "train min", "steps/s"]
    return markdown_table(header, body)


def render_markdown(runs: list[RunRecord], figures: Iterable[str] = ()) -> str:
    """The benchmarks.md leaderboard section; ``figures`` are image paths relative to the markdown file."""
    rows = build_rows(runs)
    reference = [r for r in rows if r.label == r.algo]
    headline = [r for r in reference if r.task == HEADLINE_TASK]
    per_task = [r for r in reference if r.task != HEADLINE_TASK]
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
    elif any(r.task == HEADLINE_TASK for r in rows):
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
    if ablations:
        parts += ["", "### Ablations", "",
                  "Variants trained with config overrides (the paper's Q-Transformer ablations come from "
                  "`qtbench sweep --ablations`, under `ablations/<variant>/`), beside the reference run "
                  "of the same algorithm and task: success, gradient steps and the training time they took.", "",
                  ablation_table(ablations), "", describe_setting(ablations)]
    figures = list(figures)
    if figures:
        parts += ["", "### Figures", "",
                  "Bars: mean over seeds with the 95% t-interval; black diamonds: the paper's real-robot "
                  "numbers. Learning curves: training loss per seed from metrics.csv.", ""]
        parts += ["\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)]
    return "\n".join(parts) + "\n"


def _wilson(successes: int, episodes: int) -> tuple[float, float]:
    from qtbench.results import wilson_interval

    return wilson_interval(successes, episodes)


def leaderboard_csv(runs: list[RunRecord]) -> str:
    """Long format: one row per (task, algorithm, column) for the mean over seeds, and one per seed.

    Mean rows carry the t-interval across seeds (empty for a single seed), seed rows the
    seed's Wilson interval.
    """
    header = ["task", "algorithm", "algo", "column", "scope", "seeds", "n_seeds", "mean", "std",
              "ci95_lo", "ci95_hi", "successes", "episodes", "train_steps"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in build_rows(runs):
        steps = _joined(r.eval.get("train_steps", "") for r in row.runs)
        for column, agg in row.columns.items():
            numbers = ["" if math.isnan(v) else v for v in (agg.mean, agg.std, *agg.ci95)]
            writer.writerow([row.task, row.label, row.algo, column, "mean", " ".join(map(str, agg.seeds)), agg.n,
                             *numbers, "", "", steps])
        for run in row.runs:
            counts = {OVERALL: (sum(s for s, _ in skill_counts(run.eval).values()), int(run.eval.get("episodes", 0)))}
            if row.task == HEADLINE_TASK:
                counts.update(category_counts(run.eval))
                counts.update(skill_counts(run.eval))
            for column, (successes, episodes) in counts.items():
                rate = run.eval["success_rate"] if column == OVERALL else successes / max(episodes, 1)
                lo, hi = _wilson(successes, episodes)
                writer.writerow([row.task, row.label, row.algo, column, "seed", run.seed, 1, rate, "", lo, hi,
                                 successes, episodes, run.eval.get("train_steps", "")])
    return buf.getvalue()


@dataclass(frozen=True)
class LeaderboardFiles:
    benchmarks: Path
    csv: Path
    plots: tuple[Path, ...]
    runs: int


def write_leaderboard(
    results_dir: Path = Path("results"), benchmarks: Path = Path("benchmarks.md"), plots: bool = True
) -> LeaderboardFiles:
    """Read every eval.json under ``results_dir``; write the benchmarks.md section, CSV and plots."""
    from qtbench.io import atomic_write_text
    from qtbench.report import write_section

    results_dir = Path(results_dir)
    runs = load_runs(results_dir) if results_dir.is_dir() else []
    if not runs:
        raise QtbenchError(f"no results found: no eval.json under {results_dir}/", PRODUCE_HINT)
    images: tuple[Path, ...] = ()
    if plots:
        from qtbench.plots import make_plots

        images = tuple(make_plots(build_rows(runs), results_dir / PLOTS_DIR))
    figures = [Path(os.path.relpath(p, Path(benchmarks).resolve().parent)).as_posix() for p in map(Path.resolve, images)]
    write_section(SECTION, render_markdown(runs, figures), benchmarks)
    csv_path = atomic_write_text(results_dir / CSV_NAME, leaderboard_csv(runs))
    return LeaderboardFiles(Path(benchmarks), csv_path, images, len(runs))


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    files = write_leaderboard(Path(args.results_dir), Path(args.benchmarks), plots=not args.no_plots)
    rows = [r for r in build_rows(load_runs(Path(args.results_dir))) if r.label == r.algo and r.task == HEADLINE_TASK]
    if rows:
        print(headline_table(rows))
    print(f"\n{files.runs} runs -> {files.benchmarks} (section '{SECTION}'), {files.csv}, "
          f"{len(files.plots)} plots in {Path(args.results_dir) / PLOTS_DIR}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="aggregate results over seeds into benchmarks.md, leaderboard.csv and plots",
        description="Read every eval.json under --results-dir and write the leaderboard.",
    )
    p.add_argument("--results-dir", default="results")
    p.add_argument("--benchmarks", default="benchmarks.md", help="markdown file to write the section into")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures")
    p.set_defaults(func=_cmd_leaderboard)
