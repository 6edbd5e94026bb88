"""`qtbench tune`: search an algorithm's declared settings on the tuning task and freeze the
best (the rule and the search live in :mod:`qtbench.tuning`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtbench.algorithms import ALGORITHMS
from qtbench.cli.sweep import format_outcomes, format_plan, print_failures
from qtbench.sweep import LocalExecutor, default_workers, plan_status, validate
from qtbench.tuning import (
    MAX_SETTINGS,
    RULE,
    TUNING_SEEDS,
    TUNING_TASK,
    freeze,
    reference_overrides,
    render_section,
    run_search,
    search_config,
    write_tuning_section,
)


def cmd_tune(args: argparse.Namespace) -> int:
    config = search_config(args.algo, Path(args.results_dir), Path(args.checkpoint_dir), task=args.task,
                           seeds=tuple(args.seeds), steps=args.steps, profile=args.profile,
                           eval_episodes_per_instruction=args.eval_episodes, workers=args.workers)
    validate(config)
    if args.dry_run:
        print(format_plan(plan_status(config)))
        return 0
    outcomes, summary = run_search(config, LocalExecutor(workers=args.workers), Path(args.benchmarks),
                                   show_progress=args.workers == 1)
    print(format_outcomes(outcomes))
    failed = print_failures(outcomes)
    frozen = freeze(args.algo, summary) if args.freeze and not failed else None
    if frozen:  # the section says so: write it again, then print it as benchmarks.md has it
        write_tuning_section(summary, Path(args.benchmarks))
    print(render_section(summary, reference_overrides(args.algo)))
    if frozen:
        print(f"\nfroze {summary['settings'][summary['chosen']]['label']} in {frozen}")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help=f"search an algorithm's declared settings on {TUNING_TASK} (resumable); --freeze keeps the best",
        description=(
            f"Train each of the algorithm's declared tuning settings (at most {MAX_SETTINGS}, the first its "
            f"paper's sparse-reward recipe) on {TUNING_TASK} with seeds {' '.join(map(str, TUNING_SEEDS))}; write "
            "results/tuning/<algo>/ and the benchmarks.md section tuning-<algo>. Finished cells are skipped. "
            f"Rule: {RULE}."
        ),
    )
    p.add_argument("--algo", required=True, help=f"algorithm name ({', '.join(ALGORITHMS)})")
    p.add_argument("--task", default=TUNING_TASK, help=f"tuning task (default {TUNING_TASK}; the rule uses it)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(TUNING_SEEDS), metavar="SEED")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per cell (default: the algorithm's budget)")
    p.add_argument("--profile", default="default", help="dataset profile")
    p.add_argument("--eval-episodes", type=int, default=None, help="evaluation episodes per instruction")
    workers = default_workers()
    p.add_argument("--workers", type=int, default=workers,
                   help=f"concurrent cells (default: one per CPU core, {workers} here)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--benchmarks", default="benchmarks.md", help="markdown file to write the section into")
    p.add_argument("--freeze", action="store_true",
                   help="when every cell is finished, record the chosen setting in qtbench/tuned.json: every "
                   "later run of the algorithm, on every task, starts from it")
    p.add_argument("--dry-run", action="store_true", help="list each cell and what the search would do; run nothing")
    p.set_defaults(func=cmd_tune)
