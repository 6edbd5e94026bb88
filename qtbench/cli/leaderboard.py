"""`qtbench leaderboard`: aggregate every eval.json over seeds into benchmarks.md, a CSV and
plots (loading, statistics and tables live in :mod:`qtbench.leaderboard`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtbench.envs.instructions import MULTI_TASK
from qtbench.leaderboard import (
    AGGREGATE_TITLES,
    EXTENDED_ALGORITHMS,
    PLOTS_DIR,
    POWER_HALF_WIDTH,
    SECTION,
    aggregate_table,
    headline_table,
    write_leaderboard,
)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    files = write_leaderboard(Path(args.results_dir), Path(args.benchmarks), plots=not args.no_plots)
    rows = files.rows
    headline = [r for r in rows if r.label == r.algo and r.task == MULTI_TASK]
    if headline:
        print(headline_table(headline))
    for name, agg in files.aggregates.items():
        if agg:
            print(f"\n{AGGREGATE_TITLES[name]}:\n{aggregate_table(agg)}")
    wide = files.underpowered
    if wide:
        print(f"\nsingle-skill cells wider than ±{100 * POWER_HALF_WIDTH:.0f} points; more seeds for "
              f"{EXTENDED_ALGORITHMS}:\n" + "\n".join(f"  {u.task}: {u.command}" for u in wide))
    print(f"\n{files.runs} runs -> {files.benchmarks} (section '{SECTION}'), {files.csv}, "
          f"{len(files.plots)} plots in {Path(args.results_dir) / PLOTS_DIR}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard",
        help="aggregate results over seeds into benchmarks.md, leaderboard.csv and plots",
        description="Read every eval.json under --results-dir (except tuning/ and archive/) and write the leaderboard.",
    )
    p.add_argument("--results-dir", default="results")
    p.add_argument("--benchmarks", default="benchmarks.md", help="markdown file to write the section into")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib figures")
    p.set_defaults(func=cmd_leaderboard)
