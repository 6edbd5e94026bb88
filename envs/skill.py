"""What a skill module provides: its horizon, initial-state sampler, success predicate and
stages, plus the stage predicates several skills share.

Stages are the ordered milestones of a skill (drawer_open: reached the handle, grasped it,
pulled it past half, open). Each is a predicate on the observation state, read through
``layout``, so it applies equally to a live episode and to a stored dataset row. The last
stage is the success test itself (it may need velocities the state does not hold), so a
skill lists its intermediate ``stages`` and names its ``goal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from qtbench.envs import layout
from qtbench.envs.instructions import Instruction
from qtbench.envs.scene import (FINGER_OPEN_GAP, GROOVE_DEPTH, HALF_LENGTH, OPEN_FINGER_X, PULL_HALF_LENGTH, PULL_OFFSET,
                                REST_HEIGHT, Scene)

# Stage thresholds shared by the skills (m); checked against the scripted plans in tests.
REACH = 0.03  # gripper point within this of the handle / the object (see near_object): "reached"
GRASP_OPENING = FINGER_OPEN_GAP - 0.02  # fingers closed at least this far: "closed"
HOLD_XY, HOLD_Z = 0.03, 0.05  # object (its length) within these of the gripper point (xy, z): "in hand"
HOLD_MIN_OPENING = 0.006  # below this the fingers closed on nothing
LIFT = 0.03  # object bottom this far above the surface it started on: "lifted"
PULL_SEAT = 0.003  # a fingertip at most this above the finger pull's ledge is seated: "hooked"


@dataclass(frozen=True)
class Stage:
    """One milestone: ``reached(state, instruction)`` holds in the states where it is passed."""

    name: str
    reached: Callable[[np.ndarray, Instruction], bool]


@dataclass(frozen=True)
class Skill:
    name: str
    horizon: int  # control steps before the env truncates an episode of this skill
    # Writes an initial configuration into scene.data.qpos (drawers, objects) from rng only.
    sample: Callable[[Scene, Instruction, np.random.Generator], None]
    # The instruction holds in the current physical state (positions/velocities computed).
    success: Callable[[Scene, Instruction], bool]
    # The ordered intermediate milestones, then the name of the final one (= success).
    stages: tuple[Stage, ...] = ()
    goal: str = "success"

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages) + (self.goal,)


NO_STAGE = "none"  # the furthest stage of an episode that passed no stage


class StageProgress:
    """The furthest stage one episode has passed, counting stages only in their order.

    ``update`` is called with every observed state: stage k counts once stage k-1 has
    been passed and its predicate holds (several may pass in one step). Success passes
    every stage, since the goal was reached whatever the path.
    """

    def __init__(self, skill: Skill, instruction: Instruction):
        self.skill, self.instruction = skill, instruction
        self.passed = 0  # number of stages passed, goal included

    def update(self, state: np.ndarray, success: bool = False) -> int:
        stages = self.skill.stages
        while self.passed < len(stages) and stages[self.passed].reached(state, self.instruction):
            self.passed += 1
        if success:
            self.passed = len(stages) + 1
        return self.passed

    @property
    def furthest(self) -> str:
        return self.skill.stage_names[self.passed - 1] if self.passed else NO_STAGE


# ---- predicates several skills share -------------------------------------------------------
def near_handle(state: np.ndarray, drawer: str) -> bool:
    return bool(np.linalg.norm(layout.gripper_pos(state) - layout.handle_pos(state, drawer)) < REACH)


def pull_offset(state: np.ndarray, drawer: str) -> np.ndarray:
    """The open gripper's left fingertip (OPEN_FINGER_X left of the gripper point) from the
    middle of the drawer's finger pull, on its ledge (scene.PULL_OFFSET)."""
    tip = layout.gripper_pos(state) - [OPEN_FINGER_X, 0.0, 0.0]
    return tip - layout.handle_pos(state, drawer) - PULL_OFFSET


def near_pull(state: np.ndarray, drawer: str) -> bool:
    return bool(np.linalg.norm(pull_offset(state, drawer)) < REACH)


def in_pull(state: np.ndarray, drawer: str) -> bool:
    """The left finger of the open gripper down in the finger pull's groove (over the ledge,
    between lip and front, its tip within PULL_SEAT of the ledge): hooked, ready to pull."""
    rel = pull_offset(state, drawer)
    over = abs(rel[0]) < PULL_HALF_LENGTH and abs(rel[1]) < 0.5 * GROOVE_DEPTH
    return bool(over and rel[2] < PULL_SEAT and not fingers_closed(state))


def offset_from_length(state: np.ndarray, obj: str) -> np.ndarray:
    """The gripper point's offset from the nearest point of the object's length: the segment
    along y (the axis the object lies along at reset) through its centre, of its half length:
    a hand anywhere along a long object is as close as one over its centre."""
    offset = layout.gripper_pos(state) - layout.object_pos(state, obj)
    offset[1] = max(0.0, abs(offset[1]) - HALF_LENGTH[obj])
    return offset


def near_object(state: np.ndarray, obj: str) -> bool:
    return bool(np.linalg.norm(offset_from_length(state, obj)) < REACH)


def fingers_closed(state: np.ndarray) -> bool:
    return bool(layout.finger_opening(state) < GRASP_OPENING)


def holding(state: np.ndarray, obj: str) -> bool:
    """The object sits between closed fingers (closed on it, not on nothing), anywhere along
    its length (see offset_from_length)."""
    rel = offset_from_length(state, obj)
    opening = layout.finger_opening(state)
    in_hand = np.linalg.norm(rel[:2]) < HOLD_XY and abs(rel[2]) < HOLD_Z
    return bool(in_hand and HOLD_MIN_OPENING < opening < GRASP_OPENING)


def lifted(state: np.ndarray, obj: str, surface_z: float) -> bool:
    """Held, with its bottom LIFT above the surface (z) it started on."""
    bottom = layout.object_pos(state, obj)[2] - REST_HEIGHT[obj]
    return holding(state, obj) and bool(bottom > surface_z + LIFT)
