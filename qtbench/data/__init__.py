"""Datasets of the benchmark: generation (Minari), integrity, export and the training view.

Public contract (other areas code against these names): ``dataset_id``,
``ensure_datasets``, ``TransitionData``, ``WindowSampler``, ``RolloutWindows``, and the
seed scheme ``eval_seeds`` / ``EVAL_SEED_OFFSET`` (evaluation seeds are disjoint from
every data seed).
"""

from qtbench.data.generate import ensure_datasets, generate_task
from qtbench.data.profiles import EVAL_SEED_OFFSET, PROFILES, eval_seeds
from qtbench.data.rollout_windows import RolloutWindows
from qtbench.data.sampler import WindowSampler
from qtbench.data.store import SPLITS, dataset_id
from qtbench.data.transitions import TransitionData

__all__ = [
    "EVAL_SEED_OFFSET",
    "PROFILES",
    "SPLITS",
    "RolloutWindows",
    "TransitionData",
    "WindowSampler",
    "dataset_id",
    "ensure_datasets",
    "eval_seeds",
    "generate_task",
]
