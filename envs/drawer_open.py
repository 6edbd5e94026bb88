"""drawer_open: all drawers start closed; success when the named drawer is pulled open.

Stages: reached_handle (gripper point within REACH of the knob, or the open gripper's left
fingertip within REACH of the finger pull's groove), grasped_handle (fingers closed at the knob, or
the left finger down in the groove: ``skill.in_pull``), pulled_half (the drawer past half of
OPEN_THRESHOLD), open (success). The knob and the finger pull are the drawer's two handles: a
grasp takes the knob, a hook the finger pull (plans.STYLES)."""

from __future__ import annotations

import numpy as np

from qtbench.envs import layout
from qtbench.envs.instructions import DRAWERS, OBJECTS, Instruction
from qtbench.envs.scene import Scene, sample_counter_positions
from qtbench.envs.skill import Skill, Stage, fingers_closed, in_pull, near_handle, near_pull

OPEN_THRESHOLD = 0.15  # m of drawer travel (of 0.2)
CLOSED_MAX = 0.01  # drawers start at most this far open


def place_all_on_counter(scene: Scene, rng: np.random.Generator, objects=OBJECTS) -> None:
    for obj, xy in zip(objects, sample_counter_positions(rng, len(objects))):
        scene.place_on_counter(obj, xy)


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    for drawer in DRAWERS:
        scene.set_drawer(drawer, rng.uniform(0.0, CLOSED_MAX))
    place_all_on_counter(scene, rng)


def success(scene: Scene, ins: Instruction) -> bool:
    return scene.drawer_q(ins.drawer) >= OPEN_THRESHOLD


STAGES = (
    Stage("reached_handle", lambda s, ins: near_handle(s, ins.drawer) or near_pull(s, ins.drawer)),
    Stage("grasped_handle",
          lambda s, ins: (near_handle(s, ins.drawer) and fingers_closed(s)) or in_pull(s, ins.drawer)),
    Stage("pulled_half", lambda s, ins: bool(layout.drawer_pos(s, ins.drawer) >= 0.5 * OPEN_THRESHOLD)),
)

SKILL = Skill("drawer_open", horizon=40, sample=sample, success=success, stages=STAGES, goal="open")
