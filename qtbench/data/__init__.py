"""Datasets of the benchmark: storage (Minari), integrity, scripted collection, export and
the training view. The default pipeline that also trains the BC collection policy lives
above this package and above training, in :mod:`qtbench.datasets`; nothing here imports
training code.

Public contract (other areas code against these names): ``Episode``, ``dataset_id``, ``DatasetName``,
``data_record``, ``TransitionData``, ``WindowSampler``, ``RolloutWindows``, and the seed
scheme ``eval_seeds`` / ``EVAL_SEED_OFFSET`` (evaluation seeds are disjoint from every
data seed).
"""

from qtbench.data.episode import Episode
from qtbench.data.profiles import PROFILES
from qtbench.data.rollout_windows import RolloutWindows
from qtbench.data.sampler import WindowSampler
from qtbench.data.seeds import EVAL_SEED_OFFSET, eval_seeds
from qtbench.data.store import SPLITS, DatasetName, data_record, dataset_id
from qtbench.data.transitions import TransitionData

__all__ = [
    "EVAL_SEED_OFFSET",
    "PROFILES",
    "SPLITS",
    "DatasetName",
    "Episode",
    "RolloutWindows",
    "TransitionData",
    "WindowSampler",
    "data_record",
    "dataset_id",
    "eval_seeds",
]
