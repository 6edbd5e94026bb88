"""drawer_close: the named drawer starts open (others closed); success when it is pushed shut.

Stages: reached_front (gripper point at the drawer's front, where either demonstrator style
pushes: on the knob or on the front panel out to its edge; see ``at_front``), pushed_half (the
drawer closed past half of its least opening at reset), closed (success)."""

from __future__ import annotations

import numpy as np

from qtbench.envs.drawer_open import CLOSED_MAX, place_all_on_counter
from qtbench.envs import layout
from qtbench.envs.instructions import DRAWERS, Instruction
from qtbench.envs.scene import (
    DRAWER_FRONT_HALF_WIDTH, DRAWER_FRONT_HEIGHT, FINGER_HALF_WIDTH, KNOB_HEIGHT, KNOB_STANDOFF, Scene,
)
from qtbench.envs.skill import Skill, Stage

CLOSED_THRESHOLD = 0.02  # m of drawer travel
START_OPEN = (0.12, 0.2)
# Gripper point to knob centre when the closed fingers press on the knob's front face: knob
# half-length 0.02 + finger half-thickness 0.012, plus slack for the hand lagging its target.
PUSH_REACH = 0.065  # a push moves the drawer with the hand: seen every 0.1 s, the hand can trail the knob face by ~3 cm
FRONT_SLACK = 0.01  # m around the front panel's extent (the hand lags its target)


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    for drawer in DRAWERS:
        scene.set_drawer(drawer, rng.uniform(*START_OPEN) if drawer == ins.drawer else rng.uniform(0.0, CLOSED_MAX))
    place_all_on_counter(scene, rng)


def success(scene: Scene, ins: Instruction) -> bool:
    return scene.drawer_q(ins.drawer) <= CLOSED_THRESHOLD


def at_front(state: np.ndarray, drawer: str) -> bool:
    """The gripper point is where a push closes ``drawer``: at most PUSH_REACH in front of the
    knob's centre and no deeper than the front panel's face (KNOB_STANDOFF behind it), across
    the panel's width (fingers overlapping its edge count) and height."""
    rel = layout.gripper_pos(state) - layout.handle_pos(state, drawer)
    return bool(-PUSH_REACH <= rel[1] <= KNOB_STANDOFF
                and abs(rel[0]) <= DRAWER_FRONT_HALF_WIDTH + FINGER_HALF_WIDTH + FRONT_SLACK
                and -KNOB_HEIGHT - FRONT_SLACK <= rel[2] <= DRAWER_FRONT_HEIGHT - KNOB_HEIGHT + FRONT_SLACK)


STAGES = (
    Stage("reached_front", lambda s, ins: at_front(s, ins.drawer)),
    Stage("pushed_half", lambda s, ins: bool(layout.drawer_pos(s, ins.drawer) <= 0.5 * START_OPEN[0])),
)

SKILL = Skill("drawer_close", horizon=40, sample=sample, success=success, stages=STAGES, goal="closed")
