"""drawer_close: the named drawer starts open (others closed); success when it is pushed shut.

Stages: reached_handle (gripper point within PUSH_REACH of the knob), pushed_half (the drawer
closed past half of its least opening at reset), closed (success)."""

from __future__ import annotations

import numpy as np

from qtbench.envs.drawer_open import CLOSED_MAX, place_all_on_counter
from qtbench.envs import layout
from qtbench.envs.instructions import DRAWERS, Instruction
from qtbench.envs.scene import Scene
from qtbench.envs.skill import Skill, Stage

CLOSED_THRESHOLD = 0.02  # m of drawer travel
START_OPEN = (0.12, 0.2)
# Gripper point to knob centre when the closed fingers press on the knob's front face: knob
# half-length 0.02 + finger half-thickness 0.012, plus slack for the hand lagging its target.
PUSH_REACH = 0.045


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    for drawer in DRAWERS:
        scene.set_drawer(drawer, rng.uniform(*START_OPEN) if drawer == ins.drawer else rng.uniform(0.0, CLOSED_MAX))
    place_all_on_counter(scene, rng)


def success(scene: Scene, ins: Instruction) -> bool:
    return scene.drawer_q(ins.drawer) <= CLOSED_THRESHOLD


STAGES = (
    Stage("reached_handle", lambda s, ins: bool(
        np.linalg.norm(layout.gripper_pos(s) - layout.handle_pos(s, ins.drawer)) < PUSH_REACH)),
    Stage("pushed_half", lambda s, ins: bool(layout.drawer_pos(s, ins.drawer) <= 0.5 * START_OPEN[0])),
)

SKILL = Skill("drawer_close", horizon=40, sample=sample, success=success, stages=STAGES, goal="closed")
