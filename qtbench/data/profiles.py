"""Dataset sizes (profiles) and the seeding scheme of generated and evaluation episodes.

Profiles, counts per instruction (a task's dataset = counts x its instructions:
drawer_open 3, drawer_close 3, pick_place 18, move_near 42, all 66):

=========  =====  ========  ==========================================================
profile    demos  failures  use
=========  =====  ========  ==========================================================
small          2         3  tests and smoke runs (seconds per task)
default       20        40  the benchmark: few demos, more failures than demos
large        100        50  towards the paper's per-task counts (100 demos per task
                            instruction, failures kept from a larger autonomous pool)
=========  =====  ========  ==========================================================

Seeds. Every generated episode's reset seed is a hash of (task, profile, seed, split,
instruction, attempt index), so generation is identical whatever ``--workers`` is, and
it lies in ``[0, EVAL_SEED_OFFSET)``. Evaluation episodes use :func:`eval_seeds`, which
start at ``EVAL_SEED_OFFSET = 2**31``: the two sets are disjoint by construction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from qtbench.errors import unknown_name

EVAL_SEED_OFFSET = 2**31
# Evaluation seeds of different run seeds never overlap for fewer episodes than this.
EVAL_SEEDS_PER_RUN = 1_000_000


@dataclass(frozen=True)
class Profile:
    """How many episodes to keep per instruction, and how hard to try."""

    name: str
    demos_per_instruction: int
    failures_per_instruction: int
    # Attempts allowed per kept episode before giving up on an instruction (e.g. an
    # autonomous collector that almost never fails there); the shortfall is recorded.
    max_attempts_per_episode: int = 10


PROFILES: dict[str, Profile] = {
    "small": Profile("small", demos_per_instruction=2, failures_per_instruction=3),
    "default": Profile("default", demos_per_instruction=20, failures_per_instruction=40),
    "large": Profile("large", demos_per_instruction=100, failures_per_instruction=50),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_name("profile", name, list(PROFILES))
    return PROFILES[name]


def profile_table() -> str:
    """One line per profile, for `--help`."""
    return "; ".join(
        f"{p.name}: {p.demos_per_instruction} demos + {p.failures_per_instruction} failures per instruction"
        for p in PROFILES.values()
    )


def episode_seed(task: str, profile: str, seed: int, split: str, instruction: str, attempt: int) -> int:
    """Reset seed of one generation attempt, in [0, EVAL_SEED_OFFSET)."""
    key = f"qtbench-data|{task}|{profile}|{seed}|{split}|{instruction}|{attempt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % EVAL_SEED_OFFSET


def eval_seeds(count: int, run_seed: int = 0) -> np.ndarray:
    """Reset seeds for ``count`` evaluation episodes of a run; never a data seed."""
    if not 0 <= count <= EVAL_SEEDS_PER_RUN:
        raise ValueError(f"count must be in [0, {EVAL_SEEDS_PER_RUN}], got {count}")
    start = EVAL_SEED_OFFSET + int(run_seed) * EVAL_SEEDS_PER_RUN
    return start + np.arange(count, dtype=np.int64)
