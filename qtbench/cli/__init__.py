"""The `qtbench` command: one argparse tree, one module of this package per command group.

Each group module (``qtbench.cli.<group>``) exposes ``register(subparsers)``, adds its
parsers and sets ``func(args) -> int`` on each (handlers are named ``cmd_<command>``);
handlers only parse, call library functions and print. Modules import heavy libraries
(torch, mujoco) inside their functions so `qtbench --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from qtbench.cpu_kernels import pin_portable_kernels
from qtbench.errors import QtbenchError

# Command groups, in the order `qtbench --help` lists them.
GROUP_MODULES = [
    "qtbench.cli.env",
    "qtbench.cli.data",
    "qtbench.cli.run",
    "qtbench.cli.eval",
    "qtbench.cli.sweep",
    "qtbench.cli.tune",
    "qtbench.cli.leaderboard",
    "qtbench.cli.headroom",
    "qtbench.cli.reproduce",
    "qtbench.cli.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtbench",
        description="Offline RL benchmark in the Q-Transformer setting.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUP_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:
        pin_portable_kernels()  # before any command imports torch: the same bits on every x86 machine
    except QtbenchError as err:
        print(f"qtbench: error: {err}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    # `kill`, a job scheduler or a container stop sends SIGTERM: stop as cleanly as Ctrl-C
    # does (training checkpoints first, a sweep stops its workers, files stay whole).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # rliable logs one INFO line per bootstrap through absl
        logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except QtbenchError as err:
        print(f"qtbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qtbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
