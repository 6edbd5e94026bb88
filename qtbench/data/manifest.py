"""The content hash of a dataset's episode arrays, and the manifest stored beside it.

The hash covers exactly what training reads (states, instruction text, actions,
rewards, terminations, truncations, in episode order) in fixed dtypes, so it is the
same whether computed from the in-memory episodes at generation or from the file.
"""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import numpy as np

from qtbench.data.episode import Episode

HASH_PREFIX = "sha256:"


def content_hash(episodes: list[Episode]) -> str:
    """sha256 over every episode's arrays, with shapes, in episode order."""
    digest = hashlib.sha256()
    for ep in episodes:
        texts = ep.observation_texts()
        parts = (
            np.ascontiguousarray(ep.states, np.float32),
            np.ascontiguousarray(ep.actions, np.float32),
            np.ascontiguousarray(ep.rewards, np.float32),
            np.ascontiguousarray(ep.terminations, np.bool_),
            np.ascontiguousarray(ep.truncations, np.bool_),
        )
        for arr in parts:
            digest.update(repr(arr.shape).encode())
            digest.update(arr.tobytes())
        digest.update("\0".join(str(t) for t in texts).encode("utf-8"))
        digest.update(b"\1")  # episode separator
    return HASH_PREFIX + digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions that determine the generated data (for the manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("qtbench", "minari", "mujoco", "gymnasium", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def summarize(episodes: list[Episode]) -> dict[str, Any]:
    """Counts a manifest and `qtbench data info` report: episodes, steps, successes,
    mean length, per-instruction and per-style counts (in first-seen order)."""
    lengths = np.array([ep.length for ep in episodes], dtype=np.int64)
    success = np.array([ep.succeeded for ep in episodes], dtype=bool)
    per_instruction: dict[str, int] = {}
    per_style: dict[str, int] = {}  # the scripted policies' styles (episodes without one left out)
    for ep in episodes:
        per_instruction[ep.instruction] = per_instruction.get(ep.instruction, 0) + 1
        if ep.style:
            per_style[ep.style] = per_style.get(ep.style, 0) + 1
    return {
        "episodes": int(len(episodes)),
        "steps": int(lengths.sum()),
        "successes": int(success.sum()),
        "success_fraction": float(success.mean()) if len(episodes) else 0.0,
        "mean_episode_length": float(lengths.mean()) if len(episodes) else 0.0,
        "per_instruction": per_instruction,
        "per_style": per_style,
    }
