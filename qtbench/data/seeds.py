"""The seeding scheme of generated and evaluation episodes, and of the collection policy.

Every generated episode's reset seed is a hash of (task, profile, seed, split,
instruction, attempt index), so generation is identical whatever ``--workers`` is, and
it lies in ``[0, EVAL_SEED_OFFSET)``. Evaluation episodes use :func:`eval_seeds`, which
start at ``EVAL_SEED_OFFSET = 2**31``: the two sets are disjoint by construction. The
collection policy's learner seed is ``COLLECTION_SEED_OFFSET + data seed``, so it is never
one of the learner seeds of the evaluated runs (0, 1, 2...).
"""

from __future__ import annotations

import hashlib

import numpy as np

EVAL_SEED_OFFSET = 2**31
COLLECTION_SEED_OFFSET = 10_000
# Evaluation seeds of different run seeds never overlap for fewer episodes than this.
EVAL_SEEDS_PER_RUN = 1_000_000


def collection_seed(data_seed: int) -> int:
    """Learner seed of the collection policy trained on the demos of data seed ``data_seed``."""
    return COLLECTION_SEED_OFFSET + int(data_seed)


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
