"""Registry: CLI algorithm names -> implementing classes (imported lazily: torch is heavy)."""

from __future__ import annotations

import importlib

from qtbench.algorithms.base import AlgoConfig, Algorithm, Batch, EnvSpecInfo, Window
from qtbench.errors import unknown_name

# name -> "module:Class"; the class carries its config dataclass as ``config_class``.
ALGORITHMS: dict[str, str] = {
    "q_transformer": "qtbench.q_transformer:QTransformer",
    "bc": "qtbench.baselines.bc:BC",
    "iql": "qtbench.baselines.iql:IQL",
    "dt": "qtbench.baselines.decision_transformer:DecisionTransformer",
    "cql": "qtbench.baselines.cql:CQL",
}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered under ``name``; a QtbenchError listing the choices otherwise."""
    if name not in ALGORITHMS:
        raise unknown_name("algorithm", name, list(ALGORITHMS))
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["ALGORITHMS", "AlgoConfig", "Algorithm", "Batch", "EnvSpecInfo", "Window", "algorithm_class"]
