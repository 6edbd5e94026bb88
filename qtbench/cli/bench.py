"""`qtbench bench TARGET`: measure speed and write it to benchmarks.md (env throughput,
training updates/s, dataset generation time). The measurements live in
:mod:`qtbench.envs.bench`, :mod:`qtbench.train_bench` and :mod:`qtbench.data_bench`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from qtbench import train_bench
from qtbench.data.profiles import PROFILES
from qtbench.data_bench import SUITE

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="measure speed and write it to benchmarks.md")
    targets = bench.add_subparsers(dest="target", metavar="TARGET", required=True)
    register_env(targets)
    train_bench.register(targets)  # `qtbench bench train`: its parser and handler live in train_bench.py
    register_data(targets)


def register_env(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser("env", help="env steps/s and simulated s per wall s, per skill")
    p.add_argument("--steps", type=int, default=2000, help="env steps per (skill, action source)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks.md"))
    p.add_argument("--compare-metaworld", action="store_true",
                   help="also time Meta-World drawer-open-v3 (needs `pip install metaworld`)")
    p.add_argument("--metaworld-python", default=sys.executable,
                   help="interpreter that can import metaworld (default: this one)")
    p.set_defaults(func=cmd_bench_env)


def cmd_bench_env(args: argparse.Namespace) -> int:
    from qtbench.benchmarks_md import write_section
    from qtbench.envs.bench import env_section

    table, body = env_section(args.steps, args.seed, args.metaworld_python if args.compare_metaworld else None)
    print(table)
    write_section("env", body, args.out)
    logger.info("wrote the env section of %s", args.out)
    return 0


def register_data(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser("data", help="time dataset generation (default profile, every task)")
    p.add_argument("--profile", default="default", choices=list(PROFILES))
    p.add_argument("--tasks", default=",".join(SUITE), help="comma-separated tasks (default: the whole suite)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="collector processes (default: all cores)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="generate only this fraction of each task's instructions and extrapolate (0 < f <= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--failures", default="bc", help="failure source: bc (default) or scripted")
    p.add_argument("--output", default="benchmarks.md", help="file whose 'data' section is replaced")
    p.set_defaults(func=cmd_bench_data)


def cmd_bench_data(args: argparse.Namespace) -> int:
    from qtbench.benchmarks_md import write_section
    from qtbench.data_bench import data_section

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    body = data_section(args.profile, tasks, args.workers, args.fraction, args.seed, args.failures)
    write_section("data", body, args.output)
    print(f"wrote the 'data' section of {args.output}")
    return 0
