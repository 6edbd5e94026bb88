"""`qtbench sweep`: run a grid of (algorithm, task, seed) cells, locally or on Ray (the
planning and executing live in :mod:`qtbench.sweep`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtbench.algorithms import headline_algorithms
from qtbench.benchmarks_md import markdown_table
from qtbench.results import ABLATIONS_DIR
from qtbench.tuning import COMPARISON_SEEDS, TUNING_SEEDS
from qtbench.sweep import (
    ABLATION_ALGO,
    ABLATIONS,
    Cell,
    CellOutcome,
    Executor,
    LocalExecutor,
    RayExecutor,
    SweepConfig,
    default_workers,
    plan_status,
    run_sweep,
    validate,
)


def format_plan(status: list[tuple[Cell, str]]) -> str:
    """The --dry-run table: each cell and what the sweep would do with it."""
    rows = [[c.label, c.task, c.seed, state] for c, state in status]
    todo = sum(not state.startswith("finished") for _, state in status)
    return markdown_table(["algorithm", "task", "seed", "plan"], rows) + f"\n\n{len(status)} cells, {todo} to run"


def format_outcomes(outcomes: list[CellOutcome]) -> str:
    """The final status table (markdown, readable in a terminal)."""
    rows = []
    for o in outcomes:
        rate = f"{o.success_rate:.3f}" if o.success_rate is not None else "-"
        error = (o.error or "").splitlines()[0][:100] if o.error else ""
        rows.append([o.cell.label, o.cell.task, o.cell.seed, o.status, rate, f"{o.seconds:.0f}", error])
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    header = ["algorithm", "task", "seed", "status", "success", "seconds", "error"]
    return markdown_table(header, rows) + f"\n\n{len(outcomes)} cells: {summary}"


def print_failures(outcomes: list[CellOutcome]) -> list[CellOutcome]:
    """Print each failed cell's error (and traceback, for an unexpected one); returns the failed cells."""
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"\nFAILED {o.cell}: {o.error}" + (f"\n{o.traceback}" if o.traceback else ""))
    return failed


def cmd_sweep(args: argparse.Namespace) -> int:
    config = SweepConfig(
        algos=args.algos or headline_algorithms(),
        tasks=args.tasks,
        seeds=args.seeds,
        ablations=args.ablations,
        steps=args.steps,
        profile=args.profile,
        results_dir=Path(args.results_dir),
        checkpoint_dir=Path(args.checkpoint_dir),
        eval_episodes_per_instruction=args.eval_episodes,
        force=args.force,
        workers=args.workers,
    )
    validate(config)
    if args.dry_run:
        print(format_plan(plan_status(config)))
        return 0
    if args.executor == "ray":
        executor: Executor = RayExecutor(address=args.address, cpus_per_task=args.cpus_per_task)
        threads = max(1, int(args.cpus_per_task))
        show_progress = False
    else:
        executor = LocalExecutor(workers=args.workers)
        # One thread per cell: on a shared or small machine extra OpenMP threads spin-wait and
        # run several times slower (see benchmarks.md); --workers fills the cores.
        threads = 1
        show_progress = args.workers == 1
    threads = args.threads or threads
    outcomes = run_sweep(config, executor, torch_threads=threads, show_progress=show_progress)
    print(format_outcomes(outcomes))
    return 1 if print_failures(outcomes) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of (algorithm, task, seed) cells, locally or on Ray",
        description=(
            "Run every (algorithm, task, seed) cell. Finished cells (eval.json present) are "
            "skipped unless --force; interrupted cells resume from their checkpoint. "
            "Exits 1 if any cell failed."
        ),
    )
    p.add_argument("--algos", nargs="+", default=None, metavar="ALGO")  # None = headline_algorithms()
    p.add_argument("--tasks", nargs="+", default=["all"], metavar="TASK")
    p.add_argument("--seeds", nargs="+", type=int, default=list(COMPARISON_SEEDS), metavar="SEED",
                   help=f"run seeds (default {' '.join(map(str, COMPARISON_SEEDS))}: seeds "
                        f"{' and '.join(map(str, TUNING_SEEDS))} chose the tuned settings, see `qtbench tune`)")
    p.add_argument(
        "--ablations", action="store_true",
        help=f"also run the paper's {ABLATION_ALGO} ablations: {', '.join(ABLATIONS)} "
        f"(results under <results-dir>/{ABLATIONS_DIR}/<label>/)",
    )
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    workers = default_workers()
    p.add_argument("--workers", type=int, default=workers,
                   help=f"concurrent cells for the local executor, one process each "
                        f"(default: one per CPU core, {workers} here)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs reserved per cell (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per cell (default: 1 locally -- fill cores with --workers -- "
                   "and --cpus-per-task on Ray)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per cell (default: the reference budget)")
    p.add_argument("--profile", default="default", help="dataset profile")
    p.add_argument("--eval-episodes", type=int, default=None, help="evaluation episodes per instruction")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--force", action="store_true", help="re-run finished cells and ignore checkpoints")
    p.add_argument("--dry-run", action="store_true", help="list each cell and what the sweep would do; run nothing")
    p.set_defaults(func=cmd_sweep)
