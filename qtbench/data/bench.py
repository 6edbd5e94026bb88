"""`qtbench bench data`: how long generating the datasets takes, written to benchmarks.md.

Datasets are generated into a temporary Minari folder (nothing of the user's is touched).
With ``--fraction f < 1`` only ceil(f * n) of each task's n instructions (spread evenly
over its list, so every skill of the multi-task list is sampled) are generated and the time is scaled by n / ceil(f * n); the table says so in that case.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

from qtbench.data.profiles import PROFILES

SUITE = ("drawer_open", "drawer_close", "pick_place", "move_near", "all")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="time dataset generation (default profile, every task)")
    p.add_argument("--profile", default="default", choices=list(PROFILES))
    p.add_argument("--tasks", default=",".join(SUITE), help="comma-separated tasks (default: the whole suite)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="collector processes (default: all cores)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="generate only this fraction of each task's instructions and extrapolate (0 < f <= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="benchmarks.md", help="file whose 'data' section is replaced")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qtbench.data.generate import generate_task
    from qtbench.data.store import use_datasets_path
    from qtbench.envs.instructions import instructions_for
    from qtbench.errors import QtbenchError
    from qtbench.report import machine_description, markdown_table, write_section

    if not 0 < args.fraction <= 1:
        raise QtbenchError(f"--fraction must be in (0, 1], got {args.fraction}", "e.g. --fraction 0.25")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows, total_measured, total_full = [], 0.0, 0.0
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qtbench-bench-data-") as root, use_datasets_path(root):
        for task in tasks:
            n = len(instructions_for(task))
            used = max(1, math.ceil(args.fraction * n))
            start = time.perf_counter()
            manifests = generate_task(task, args.profile, args.seed, args.workers, instructions=used)
            seconds = time.perf_counter() - start
            full = seconds * n / used
            mixed = manifests["mixed"]
            rows.append([
                task, f"{used}/{n}", mixed["episodes"], mixed["steps"],
                mixed["discarded_demo_attempts"] + mixed["discarded_autonomous_successes"],
                f"{seconds:.1f}", f"{mixed['steps'] / seconds:.0f}", f"{full:.0f}",
            ])
            total_measured += seconds
            total_full += full
            print(f"{task}: {seconds:.1f} s for {used}/{n} instructions -> {full:.0f} s for all")
    note = (
        "measured on every instruction"
        if args.fraction >= 1
        else f"measured on {args.fraction:.0%} of each task's instructions (spread evenly over its list); the last column "
        "scales that time by (instructions / instructions measured), an extrapolation, not a measurement "
        "(fixed costs such as starting the worker processes are scaled too, so it overstates)"
    )
    body = "\n".join([
        "## Dataset generation (`qtbench bench data`)",
        "",
        f"Profile `{args.profile}`, seed {args.seed}, {args.workers} worker process(es); {note}. "
        "Time includes collecting, writing the three Minari datasets (demos, failures, mixed) "
        "and reading them back to verify their hashes. Steps/s counts kept (mixed) steps; "
        "discarded episodes are collected too but not counted in it.",
        f"Machine: {machine_description()}; 1-minute load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after the run (other processes share the cores when it exceeds the core count).",
        "",
        markdown_table(
            ["task", "instructions", "episodes (mixed)", "steps (mixed)", "discarded", "seconds measured",
             "kept steps/s", "seconds, all instructions"],
            rows,
        ),
        "",
        f"Whole suite ({', '.join(tasks)}): {total_measured:.0f} s measured, "
        f"{total_full:.0f} s ({total_full / 60:.1f} min) for every instruction"
        + (" (extrapolated)." if args.fraction < 1 else "."),
    ])
    write_section("data", body, args.output)
    print(f"wrote the 'data' section of {args.output}")
    return 0
