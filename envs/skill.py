"""What a skill module provides: its horizon, initial-state sampler and success predicate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from qtbench.envs.instructions import Instruction
from qtbench.envs.scene import Scene


@dataclass(frozen=True)
class Skill:
    name: str
    horizon: int  # control steps before the env truncates an episode of this skill
    # Writes an initial configuration into scene.data.qpos (drawers, objects) from rng only.
    sample: Callable[[Scene, Instruction, np.random.Generator], None]
    # The instruction holds in the current physical state (positions/velocities computed).
    success: Callable[[Scene, Instruction], bool]
