"""pick_place: "out" = the drawer is open with the object inside, success when it rests on the
counter; "in" = the drawer is open and empty with the object on the counter, success when the
object rests inside that drawer.

Stages: reached_object (gripper point within REACH of its centre), grasped (held between
closed fingers), lifted (held, its bottom LIFT above where it started: the drawer floor or
the counter), over_target (held above the goal region: for "out" the counter outside the
drawer's footprint, for "in" the drawer's interior footprint), placed (success)."""

from __future__ import annotations

import numpy as np

from qtbench.envs import layout
from qtbench.envs.drawer_open import CLOSED_MAX
from qtbench.envs.instructions import DRAWERS, OBJECTS, Instruction
from qtbench.envs.scene import (
    CABINET_FACE_Y,
    COUNTER_BOUNDS_HIGH,
    COUNTER_BOUNDS_LOW,
    COUNTER_TOP,
    DRAWER_INNER_HIGH,
    DRAWER_INNER_LOW,
    HALF_LENGTH,
    KNOB_HEIGHT,
    RESTING_SPEED,
    Scene,
    sample_counter_positions,
)
from qtbench.envs.skill import Skill, Stage, holding, lifted, near_object

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


def drawer_origin(state: np.ndarray, drawer: str) -> np.ndarray:
    """The drawer body's origin (the frame of DRAWER_INNER_*) from the state: the knob sits
    centred in x, KNOB_HEIGHT above it, and the body's closed origin is on the cabinet face."""
    knob = layout.handle_pos(state, drawer)
    q = float(layout.drawer_pos(state, drawer))
    return np.array([knob[0], CABINET_FACE_Y - q, knob[2] - KNOB_HEIGHT])


def over_drawer(state: np.ndarray, obj: str, drawer: str, margin: float = 0.0) -> bool:
    """The object's centre lies above the drawer's interior footprint grown by ``margin`` on
    every side (any height)."""
    rel = layout.object_pos(state, obj)[:2] - drawer_origin(state, drawer)[:2]
    return bool(np.all(rel >= DRAWER_INNER_LOW[:2] - margin) and np.all(rel <= DRAWER_INNER_HIGH[:2] + margin))


def start_surface(state: np.ndarray, ins: Instruction) -> float:
    """Height of the surface the object starts on: the drawer floor ("out") or the counter."""
    if ins.direction == "out":
        return float(drawer_origin(state, ins.drawer)[2] + DRAWER_INNER_LOW[2])
    return COUNTER_TOP


def over_target(state: np.ndarray, ins: Instruction) -> bool:
    if not holding(state, ins.obj):
        return False
    if ins.direction == "in":  # released with its centre up to its half length past the rim, it still falls in
        return over_drawer(state, ins.obj, ins.drawer, margin=HALF_LENGTH[ins.obj])
    xy = layout.object_pos(state, ins.obj)[:2]
    on_counter = bool(np.all(xy >= COUNTER_BOUNDS_LOW) and np.all(xy <= COUNTER_BOUNDS_HIGH))
    return on_counter and not over_drawer(state, ins.obj, ins.drawer)


STAGES = (
    Stage("reached_object", lambda s, ins: near_object(s, ins.obj)),
    Stage("grasped", lambda s, ins: holding(s, ins.obj)),
    Stage("lifted", lambda s, ins: lifted(s, ins.obj, start_surface(s, ins))),
    Stage("over_target", over_target),
)

SKILL = Skill("pick_place", horizon=60, sample=sample, success=success, stages=STAGES, goal="placed")
