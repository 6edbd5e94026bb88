"""`qtbench reproduce`: re-run a cell (or re-generate datasets) and say whether the numbers
match (the comparisons live in :mod:`qtbench.reproduce`)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qtbench.benchmarks_md import markdown_table
from qtbench.errors import QtbenchError
from qtbench.reproduce import (
    DEFAULT_TOLERANCE,
    Verdict,
    format_verdict,
    reproduce_cell,
    reproduce_datasets,
    stored_tasks,
)


# ---- CLI ---------------------------------------------------------------------------------
def _workdir(args: argparse.Namespace) -> tempfile.TemporaryDirectory | None:
    return None if args.workdir else tempfile.TemporaryDirectory(prefix="qtbench-reproduce-")


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.datasets == bool(args.run_dir):
        raise QtbenchError("give either a cell's results directory or --datasets",
                           "e.g. `qtbench reproduce results/drawer_open/q_transformer/seed2` "
                           "or `qtbench reproduce --datasets --task drawer_open`")
    temp = _workdir(args)
    workdir = Path(args.workdir or temp.name)
    try:
        if args.datasets:
            tasks = args.task or stored_tasks()
            if not tasks:
                raise QtbenchError("no qtbench datasets found to reproduce",
                                   "generate them first: qtbench data generate --task drawer_open")
            verdict = reproduce_datasets(tasks, workdir, workers=args.workers)
            print(f"datasets of {', '.join(tasks)} re-generated into {workdir}; content hashes compared")
            print(_dataset_verdict(verdict))
        else:
            verdict, new_dir = reproduce_cell(Path(args.run_dir), workdir, args.tolerance)
            print(f"re-ran {args.run_dir} into {new_dir}" + (" (temporary, removed)" if temp else ""))
            print(format_verdict(verdict))
    finally:
        if temp is not None:
            temp.cleanup()
    return 0 if verdict.identical else 1


def _dataset_verdict(verdict: Verdict) -> str:
    text = f"verdict: {verdict.kind} (content hashes must be equal)"
    if verdict.differences:
        rows = [[d.field, d.original, d.reproduced] for d in verdict.differences]
        text += "\n\n" + markdown_table(["dataset field", "manifest", "re-generated"], rows)
    return "\n".join([text, *verdict.notes])


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="re-run a cell (or re-generate datasets) and check the numbers match",
        description=(
            "Re-run a cell from its config.json and seed into a temporary directory and compare "
            "the success fields of eval.json (not timings): identical / within tolerance / "
            "different; notes name other training data, another machine and the first step where "
            "the training losses differ. With --datasets, re-generate datasets and compare content hashes with "
            "their manifests. Exits 1 unless identical."
        ),
    )
    p.add_argument("run_dir", nargs="?", help="a cell's results directory, e.g. results/all/q_transformer/seed2")
    p.add_argument("--datasets", action="store_true", help="re-generate datasets and compare their hashes")
    p.add_argument("--task", nargs="+", default=None, help="with --datasets: only these tasks (default: all stored)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"absolute tolerance on success rates (default {DEFAULT_TOLERANCE})")
    p.add_argument("--workers", type=int, default=1, help="with --datasets: generation workers")
    p.add_argument("--workdir", default=None, help="keep the re-run here instead of a temporary directory")
    p.set_defaults(func=cmd_reproduce)
