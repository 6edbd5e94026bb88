"""A finished run loaded back from its checkpoint: its records, its datasets and its final
weights, checked to belong together (what `qtbench eval` and `qtbench probe` work on)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A finished run with its final weights restored."""

    run_dir: Path
    config: dict[str, Any]  # config.json
    record: dict[str, Any]  # eval.json
    algo_config: Any  # the algorithm's config dataclass
    algorithm: Any
    data: Any  # the TransitionData it trained on
    checkpoint_step: int
    device: str

    def act(self, window: Any) -> np.ndarray:
        """Batched greedy actions for a numpy Window (what evaluation calls)."""
        return self.algorithm.act(window.to_torch(self.device))


def checkpoint_cell(run_dir: Path, checkpoint_root: Path) -> Path:
    """The checkpoint folder of a results cell: the same <task>/<algo>/seed<k> below the
    checkpoint root, under ablations/<label>/ when the cell is an ablation run."""
    parts = Path(run_dir).resolve().parts
    tail = parts[-5:] if len(parts) >= 5 and parts[-5] == "ablations" else parts[-3:]
    return Path(checkpoint_root).joinpath(*tail)


def load_run(run_dir: Path, checkpoint_root: Path, device: str = "cpu") -> LoadedRun:
    """Read a cell's config and eval.json, its datasets and its last checkpoint."""
    from qtbench import checkpoint
    from qtbench.algorithms import algorithm_class
    from qtbench.data import TransitionData, data_record
    from qtbench.datasets import ensure_datasets
    from qtbench.reproduce import config_overrides, read_cell
    from qtbench.train import DATA_SEED, check_names, reference_config

    config, record = read_cell(Path(run_dir))
    algo, task = config["algo"], config["task"]
    check_names(algo, task)
    ckpt_dir = checkpoint_cell(run_dir, checkpoint_root)
    state = checkpoint.load(ckpt_dir)
    if state is None:
        raise QtbenchError(
            f"no checkpoint of {run_dir} in {ckpt_dir} (checkpoints are not committed with results)",
            "pass --checkpoint-dir with the root `qtbench run --checkpoint-dir` wrote to, "
            f"or train the cell again: qtbench reproduce {run_dir}",
        )
    cls = algorithm_class(algo)
    # the reference config (frozen settings included) plus the stored config's differences from it
    algo_config = reference_config(algo, config_overrides(algo, config.get("algo_config", {})))
    checkpoint.check_compatible(state, algo, dataclasses.asdict(algo_config), checkpoint.checkpoint_path(ckpt_dir),
                                config.get("data"), cls.config_class)
    if state.step != record.get("train_steps", state.step):
        log.warning("checkpoint %s is at step %d, but eval.json was written after %s steps",
                     ckpt_dir, state.step, record.get("train_steps"))
    trained_on = config.get("data")
    if not trained_on:
        raise QtbenchError(
            f"{run_dir} predates data records: its config.json does not say which datasets it trained on",
            f"train the cell again on today's data (qtbench reproduce {run_dir}), then evaluate or probe it",
        )
    profile, source = trained_on["profile"], trained_on["failure_source"]
    ensure_datasets(task, profile, DATA_SEED, source)
    if data_record(task, profile, source, algo_config.dataset)["fingerprint"] != trained_on["fingerprint"]:
        raise QtbenchError(
            f"the {profile}-{source} datasets of {task} are not the ones {run_dir} trained on (content hashes differ)",
            f"regenerate them with the code the run used, or train the cell again: qtbench reproduce {run_dir}",
        )
    data = TransitionData.load(task, algo_config.dataset, successful_only=algo_config.filtered, profile=profile,
                               source=source, demo_styles=algo_config.demo_styles)
    algorithm = cls(data.spec_info(), algo_config, device=device)
    algorithm.load_state_dict(state.algorithm)
    return LoadedRun(Path(run_dir), config, record, algo_config, algorithm, data, state.step, device)
