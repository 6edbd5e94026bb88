"""Datasets of the benchmark: generation (Minari), integrity, export and the training view.

Public contract (other areas code against these names):
``dataset_id``, ``ensure_datasets``, ``TransitionData``, ``WindowSampler``,
``RolloutWindows``, ``eval_seeds`` / ``EVAL_SEED_OFFSET``.
"""

from qtbench.data.rollout_windows import RolloutWindows
from qtbench.data.sampler import WindowSampler
from qtbench.data.transitions import TransitionData

__all__ = ["RolloutWindows", "TransitionData", "WindowSampler"]
