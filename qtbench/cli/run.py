"""`qtbench run`: train and evaluate one (algo, task, seed) cell and print its summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtbench.algorithms import ALGORITHMS
from qtbench.errors import QtbenchError
from qtbench.train import (
    CHECKPOINT_EVERY,
    CHECKPOINT_SECONDS,
    CURVE_EPISODES_PER_INSTRUCTION,
    CURVE_EPISODES_PER_INSTRUCTION_ALL,
    CURVE_POINTS,
)
from qtbench.tuning import COMPARISON_SEEDS, TUNING_SEEDS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="train one algorithm on one task, evaluate it, write results/<task>/<algo>/seed<k>/",
        description=(
            "Make the task's datasets if missing, train the algorithm for a fixed number of "
            "gradient steps (checkpointing), evaluate it on every instruction of the task, and "
            "write config.json, metrics.csv and eval.json."
        ),
    )
    p.add_argument("--algo", required=True, help=f"algorithm name ({', '.join(ALGORITHMS)})")
    p.add_argument("--task", required=True, help="task name (drawer_open, drawer_close, pick_place, move_near, all)")
    p.add_argument("--seed", type=int, default=COMPARISON_SEEDS[0],
                   help=f"learner seed (model init, batch sampling, eval resets; default {COMPARISON_SEEDS[0]}, the "
                        f"first comparison seed: seeds {', '.join(map(str, TUNING_SEEDS))} chose the tuned settings)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps (default: the algorithm's budget)")
    p.add_argument("--profile", default="default", help="dataset size profile (default: default)")
    p.add_argument("--failures", default="bc", metavar="SOURCE",
                   help="failure source of the datasets: bc (default, the BC collection policy) or scripted "
                   "(such runs write under <results-dir>/failures-scripted/)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="evaluation episodes per instruction (default 100; 10 for --task all); every "
                   "algorithm run with the same --seed is evaluated on the same episodes")
    p.add_argument("--curve-points", type=int, default=CURVE_POINTS,
                   help=f"learning-curve evaluations during training (default {CURVE_POINTS}; 0 = none), each on "
                   f"the first {CURVE_EPISODES_PER_INSTRUCTION} episodes per instruction "
                   f"({CURVE_EPISODES_PER_INSTRUCTION_ALL} for --task all) of the final evaluation")
    p.add_argument("--resume", action="store_true", help="continue from the cell's last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, metavar="STEPS",
                   help=f"checkpoint every STEPS gradient steps or every --checkpoint-seconds of training, "
                        f"whichever comes first (default {CHECKPOINT_EVERY})")
    p.add_argument("--checkpoint-seconds", type=float, default=CHECKPOINT_SECONDS, metavar="S",
                   help=f"see --checkpoint-every (default {CHECKPOINT_SECONDS:g}; 0 = by steps only); "
                        "when a run checkpoints never changes what it learns")
    p.add_argument("--force", action="store_true",
                   help="with --resume: start fresh when the checkpoint does not match this run")
    p.add_argument("--video", action="store_true", help="save a few evaluation episodes as GIFs under the checkpoint dir")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: much faster on a shared machine; 0 = one per core)")
    p.add_argument("--no-conservative", action="store_true", help="ablation: conservative=False")
    p.add_argument("--no-mc-return", action="store_true", help="ablation: mc_return=False")
    p.add_argument("--n-step", type=int, default=None, help="n-step return horizon (n_step=N)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="set a field of the algorithm's config, e.g. --set learning_rate=1e-4 history=2")
    p.add_argument("--untuned", action="store_true",
                   help="start from the algorithm's own defaults (its paper's recipe), not from the settings "
                        "`qtbench tune --freeze` chose (qtbench/tuned.json); --set still applies")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_run)


def parse_overrides(args: argparse.Namespace) -> dict[str, object]:
    """--set pairs and ablation flags as config field overrides (validated later per algorithm)."""
    overrides: dict[str, object] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QtbenchError(f"--set {item!r} is not KEY=VALUE", "write it as e.g. --set learning_rate=1e-4")
        overrides[key.strip()] = value.strip()
    if args.no_conservative:
        overrides["conservative"] = False
    if args.no_mc_return:
        overrides["mc_return"] = False
    if args.n_step is not None:
        overrides["n_step"] = args.n_step
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from qtbench.algorithms import algorithm_class
    from qtbench.funnel import compact
    from qtbench.datasets import check_failure_source, collector_success_rate, ensure_datasets
    from qtbench.results import EVAL_FILE, read_json, run_root, summary_table
    from qtbench.train import DATA_SEED, RunSpec, check_names, check_run, run_cell, typed_overrides

    check_names(args.algo, args.task)
    check_failure_source(args.failures)
    # typed before they name the results directory: "--set conservative=false" is "no_conservative"
    overrides = typed_overrides(algorithm_class(args.algo).config_class, parse_overrides(args))
    spec = RunSpec(
        algo=args.algo,
        task=args.task,
        seed=args.seed,
        steps=args.steps,
        profile=args.profile,
        failures=args.failures,
        # Runs with overrides (ablations, --set) or on another failure source never overwrite
        # the reference cell.
        results_dir=run_root(args.results_dir, args.algo, overrides, args.failures),
        checkpoint_dir=run_root(args.checkpoint_dir, args.algo, overrides, args.failures),
        overrides=overrides,
        tuned=not args.untuned,
        resume=args.resume,
        eval_episodes_per_instruction=args.eval_episodes,
        device=args.device,
        video=args.video,
        force=args.force,
        checkpoint_every=args.checkpoint_every,
        checkpoint_seconds=args.checkpoint_seconds,
        threads=args.threads or None,
        progress=not args.no_progress,
        curve_points=args.curve_points,
    )
    check_run(spec)  # before the datasets are made
    ensure_datasets(args.task, args.profile, DATA_SEED, args.failures, progress=not args.no_progress)
    out_dir = run_cell(spec)
    record = read_json(out_dir / EVAL_FILE)
    print(summary_table(record, collector_success_rate(args.task, args.profile, args.failures)))
    print("\nstage funnel (episodes past each stage, in order):\n" + compact(record))
    print(f"\nresults: {out_dir}")
    return 0
