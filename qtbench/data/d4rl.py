"""Export of a dataset to the D4RL layout, for offline RL code written against D4RL.

Minari terminations become ``terminals`` and truncations ``timeouts``; each step's
``next_observations`` row is the following observation of the same episode (the final
observation for the last step), so no pair crosses an episode boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qtbench.atomic import atomic_write
from qtbench.data.episode import Episode

D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "instructions")


def d4rl_arrays(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """Flat D4RL arrays (one row per transition) plus the instruction text of each step."""
    return {
        "observations": np.concatenate([ep.states[:-1] for ep in episodes]),
        "actions": np.concatenate([ep.actions for ep in episodes]),
        "rewards": np.concatenate([ep.rewards for ep in episodes]),
        "next_observations": np.concatenate([ep.states[1:] for ep in episodes]),
        "terminals": np.concatenate([ep.terminations for ep in episodes]),
        "timeouts": np.concatenate([ep.truncations for ep in episodes]),
        "instructions": np.array([ep.instruction for ep in episodes for _ in range(ep.length)]),
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
