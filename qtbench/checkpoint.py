"""Training checkpoints: everything needed to continue a run bit for bit, nothing executable.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``; it is written atomically so a crash mid-save keeps
the previous one. Before resuming, the stored algorithm name and config are compared
with the requested ones: continuing with other settings would silently mix two runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtbench.atomic import atomic_write
from qtbench.algorithms.ranges import completed, differing_fields
from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """A run's state at the end of a training step (``step`` updates done)."""

    algo: str
    algo_config: dict[str, Any]
    step: int
    algorithm: dict[str, Any]
    sampler_rng: dict[str, Any]  # numpy bit_generator.state of the sampling Generator
    torch_rng: Any  # torch.get_rng_state() (a uint8 tensor)
    wall_seconds: float = 0.0  # training time spent so far, over all segments
    metrics: list[dict[str, float]] = field(default_factory=list)  # metrics.csv rows so far
    pending: dict[str, float] = field(default_factory=dict)  # metric sums since the last row
    pending_count: int = 0
    cuda_rng: list[Any] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # learning-curve points so far
    data: dict[str, Any] = field(default_factory=dict)  # the datasets trained on (data.data_record); {} if unrecorded


def normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a config (tuples -> lists), so stored and requested configs compare equal."""
    return json.loads(json.dumps(config, sort_keys=True))


def config_changes(stored: dict[str, Any], wanted: dict[str, Any], config_class: type | None = None,
                   machine: str | None = None) -> dict[str, tuple[Any, Any]]:
    """field -> (stored value, wanted value) for each field of an algorithm config that differs
    (in JSON form); with ``config_class``, fields added since ``stored`` was written count at
    the value it ran with (``ranges.completed``). ``amp`` counts as the precision each runs in
    (``nets.precision_ran``; ``machine``: the stored run's machine line, when it has one), so
    "auto" made on a CPU without bfloat16 in hardware is the same run as "none"."""
    from qtbench.nets import precision_ran

    have = normalise_config(completed(config_class, stored) if config_class else stored)
    want = normalise_config(wanted)
    if "amp" in have and "amp" in want:
        have["amp"], want["amp"] = precision_ran(have["amp"], machine), precision_ran(want["amp"])
    return {key: (have.get(key), want.get(key)) for key in differing_fields(have, want)}


def checkpoint_path(directory: Path) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save(directory: Path, state: TrainState) -> Path:
    """Write ``state`` to ``directory/last.pt`` atomically."""
    import torch

    payload = {"format": FORMAT_VERSION, **state.__dict__}
    payload["algo_config"] = normalise_config(state.algo_config)
    return atomic_write(checkpoint_path(directory), lambda tmp: torch.save(payload, tmp))


def load(directory: Path) -> TrainState | None:
    """The checkpoint in ``directory``, or None when there is none."""
    import torch

    path = checkpoint_path(directory)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and how to get past it
        raise QtbenchError(
            f"cannot read checkpoint {path}: {err}",
            "delete it, start fresh with --force, or use another --checkpoint-dir",
        ) from err
    if payload.pop("format", None) != FORMAT_VERSION:
        raise QtbenchError(
            f"checkpoint {path} has an unknown format",
            "start fresh with --force, or use another --checkpoint-dir",
        )
    return TrainState(**payload)


def check_compatible(
    state: TrainState, algo: str, algo_config: dict[str, Any], path: Path, data: dict[str, Any] | None = None,
    config_class: type | None = None,
) -> None:
    """QtbenchError naming what differs when ``state`` is not a checkpoint of this run: another
    algorithm, config, or (when both record it) other training data than ``data``
    (``qtbench.data.data_record``), e.g. datasets regenerated since the checkpoint was saved.
    With ``config_class``, fields added since the checkpoint was saved count at the value it
    trained with (``ranges.completed``)."""
    if state.algo != algo:
        raise QtbenchError(
            f"checkpoint {path} is from algorithm {state.algo!r}, not {algo!r}",
            "start fresh with --force (overwrites it), or use another --checkpoint-dir",
        )
    trained, wanted = state.data.get("fingerprint"), (data or {}).get("fingerprint")
    if trained and wanted and trained != wanted:
        raise QtbenchError(
            f"checkpoint {path} was trained on other data than this run's (fingerprint {trained} vs {wanted}): "
            "the datasets were regenerated since",
            "start fresh with --force (overwrites it), or use another --checkpoint-dir",
        )
    changes = config_changes(state.algo_config, algo_config, config_class)
    diff = [f"{key}: checkpoint {have!r} vs requested {want!r}" for key, (have, want) in changes.items()]
    if diff:
        raise QtbenchError(
            f"checkpoint {path} was trained with another {algo} config ({'; '.join(diff)})",
            "resume with the same --set/ablation flags, start fresh with --force, "
            "or use another --checkpoint-dir",
        )
