"""Dataset sizes (profiles): how many episodes each instruction gets, and how hard to try.

Profiles keep the Q-Transformer paper's proportions (about 38,000 demonstrations and
20,000 failures over about 700 instructions: roughly two demos per failure). Counts per
instruction (a task's dataset = counts x its instructions: drawer_open 3, drawer_close 3,
pick_place 18, move_near 42, all 66):

=========  =====  ========  ================  ==============================================
profile    demos  failures  collection BC     use
=========  =====  ========  ================  ==============================================
small          4         2  40 steps          tests and smoke runs (seconds per task)
default       50        25  bc's default      the benchmark (the paper: ~54 + ~29)
large        100        50  bc's default      twice the default
=========  =====  ========  ================  ==============================================

"collection BC" is the gradient-step budget of the behaviour-cloning policy whose failed
episodes fill the failures (qtbench.datasets); None means the ``bc`` leaderboard row's own
default budget, so the collection policy is trained exactly like that row.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtbench.errors import unknown_name


@dataclass(frozen=True)
class Profile:
    """How many episodes to keep per instruction, and how hard to try."""

    name: str
    demos_per_instruction: int
    failures_per_instruction: int
    # Attempts allowed per kept episode before giving up on an instruction (e.g. an
    # autonomous collector that almost never fails there); the shortfall is recorded.
    # With a collector that fails less than 1 time in 10 on an instruction, that instruction
    # gets fewer failures than asked (its manifest records the shortfall, generation warns).
    max_attempts_per_episode: int = 10
    # Gradient steps of the BC collection policy; None = the bc algorithm's default budget.
    collection_steps: int | None = None


PROFILES: dict[str, Profile] = {
    "small": Profile("small", demos_per_instruction=4, failures_per_instruction=2, collection_steps=40),
    "default": Profile("default", demos_per_instruction=50, failures_per_instruction=25),
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
