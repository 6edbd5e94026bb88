"""`qtbench headroom`: BC on the robust demonstrator style against BC on all demos, into
benchmarks.md (the section is computed in :mod:`qtbench.headroom`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qtbench.headroom import DEFAULT_RESULTS, SECTION, write_headroom


def cmd_headroom(args: argparse.Namespace) -> int:
    body, path = write_headroom(Path(args.results_dir), args.profile, Path(args.benchmarks))
    print(body)
    print(f"\nwrote section '{SECTION}' of {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("headroom", help="BC on the robust demo style vs BC on all demos, into benchmarks.md")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS),
                   help=f"where the bc and bc robust-only cells are (default: {DEFAULT_RESULTS})")
    p.add_argument("--profile", default="default", help="dataset profile of the collection policy's manifest")
    p.add_argument("--benchmarks", default="benchmarks.md", help="the benchmarks file to update")
    p.set_defaults(func=cmd_headroom)
