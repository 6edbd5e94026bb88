"""pick_place: "out" = the drawer is open with the object inside, success when it rests on the
counter; "in" = the drawer is open and empty with the object on the counter, success when the
object rests inside that drawer."""

from __future__ import annotations

import numpy as np

from qtbench.envs.drawer_open import CLOSED_MAX
from qtbench.envs.instructions import DRAWERS, OBJECTS, Instruction
from qtbench.envs.scene import RESTING_SPEED, Scene, sample_counter_positions
from qtbench.envs.skill import Skill

START_OPEN = (0.18, 0.2)  # the drawer of the instruction starts this far open
ITEM_X = 0.07  # |x| of an object placed in a drawer (drawer frame)


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    q = rng.uniform(*START_OPEN)
    for drawer in DRAWERS:
        scene.set_drawer(drawer, q if drawer == ins.drawer else rng.uniform(0.0, CLOSED_MAX))
    others = [o for o in OBJECTS if o != ins.obj]
    if ins.direction == "out":
        local = np.array([rng.uniform(-ITEM_X, ITEM_X), rng.uniform(0.04, q - 0.1)])
        scene.place_in_drawer(ins.obj, ins.drawer, local)
    else:
        others.insert(0, ins.obj)
    for obj, xy in zip(others, sample_counter_positions(rng, len(others))):
        scene.place_on_counter(obj, xy)


def success(scene: Scene, ins: Instruction) -> bool:
    if ins.direction == "out":
        return scene.on_counter(ins.obj)
    return scene.in_drawer(ins.obj, ins.drawer) and scene.object_speed(ins.obj) < RESTING_SPEED


SKILL = Skill("pick_place", horizon=60, sample=sample, success=success)
