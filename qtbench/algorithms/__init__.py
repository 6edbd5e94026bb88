"""Registry: CLI algorithm names -> implementing classes (imported lazily: torch is heavy).

Registering a name here is the only step outside an algorithm's own module: everything
else about an algorithm (its budget, display order, place in the headline sweep) is read
from its class.
"""

from __future__ import annotations

import importlib
import math

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


def default_steps(name: str) -> int:
    """The algorithm's default training budget, in gradient steps."""
    return algorithm_class(name).default_steps


def display_rank(name: str) -> float:
    """Where the algorithm's rows sort in tables; names no longer registered sort last."""
    return algorithm_class(name).display_rank if name in ALGORITHMS else math.inf


def headline_algorithms() -> list[str]:
    """The algorithms `qtbench sweep` runs by default, in registry order."""
    return [name for name in ALGORITHMS if algorithm_class(name).headline]


__all__ = [
    "ALGORITHMS", "AlgoConfig", "Algorithm", "Batch", "EnvSpecInfo", "Window",
    "algorithm_class", "default_steps", "display_rank", "headline_algorithms",
]
