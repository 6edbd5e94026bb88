"""Export of a dataset to the D4RL layout, for offline RL code written against D4RL.

Minari terminations become ``terminals`` and truncations ``timeouts``; each step's
``next_observations`` row is the following observation of the same episode (the final
observation for the last step), so no pair crosses an episode boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qtbench.io import atomic_write

D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "instructions")


def d4rl_arrays(episodes: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Flat D4RL arrays (one row per transition) plus the instruction text of each step."""
    states = [np.asarray(ep["states"], np.float32) for ep in episodes]
    return {
        "observations": np.concatenate([s[:-1] for s in states]),
        "actions": np.concatenate([np.asarray(ep["actions"], np.float32) for ep in episodes]),
        "rewards": np.concatenate([np.asarray(ep["rewards"], np.float32) for ep in episodes]),
        "next_observations": np.concatenate([s[1:] for s in states]),
        "terminals": np.concatenate([np.asarray(ep["terminations"], bool) for ep in episodes]),
        "timeouts": np.concatenate([np.asarray(ep["truncations"], bool) for ep in episodes]),
        "instructions": np.array([ep["instruction"] for ep in episodes for _ in range(len(ep["rewards"]))]),
    }


def export_d4rl(dataset_id: str, out: str | Path) -> dict[str, tuple[int, ...]]:
    """Write ``out`` (.npz, atomically) from a verified dataset; returns the array shapes."""
    from qtbench.data.store import parse_dataset_id, read_dataset

    arrays = d4rl_arrays(read_dataset(parse_dataset_id(dataset_id).id, verify=True).episodes)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
    return {key: arr.shape for key, arr in arrays.items()}
