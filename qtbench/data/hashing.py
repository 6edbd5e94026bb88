"""The content hash of a dataset's episodes: the fingerprint a manifest records and every
read verifies.

The hash covers exactly what training reads (states, instruction text, actions,
rewards, terminations, truncations, in episode order) in fixed dtypes, so it is the
same whether computed from the in-memory episodes at generation or from the file.
"""

from __future__ import annotations

import hashlib

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
