"""drawer_close: the named drawer starts open (others closed); success when it is pushed shut."""

from __future__ import annotations

import numpy as np

from qtbench.envs.drawer_open import CLOSED_MAX, place_all_on_counter
from qtbench.envs.instructions import DRAWERS, Instruction
from qtbench.envs.scene import Scene
from qtbench.envs.skill import Skill

CLOSED_THRESHOLD = 0.02  # m of drawer travel
START_OPEN = (0.12, 0.2)


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    for drawer in DRAWERS:
        scene.set_drawer(drawer, rng.uniform(*START_OPEN) if drawer == ins.drawer else rng.uniform(0.0, CLOSED_MAX))
    place_all_on_counter(scene, rng)


def success(scene: Scene, ins: Instruction) -> bool:
    return scene.drawer_q(ins.drawer) <= CLOSED_THRESHOLD


SKILL = Skill("drawer_close", horizon=40, sample=sample, success=success)
