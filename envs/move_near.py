"""move_near: every object starts on the counter (drawers closed), the two named ones at least
START_DISTANCE apart; success when the moved object rests on the counter within NEAR of the
target (centre distance in the counter plane).

Stages: reached_object (gripper point within REACH of its centre), grasped (held between
closed fingers), lifted (held, its bottom LIFT above the counter), near_target (held with
its centre within NEAR of the target's in the counter plane), placed (success)."""

from __future__ import annotations

import numpy as np

from qtbench.envs.drawer_open import CLOSED_MAX
from qtbench.envs.instructions import DRAWERS, OBJECTS, Instruction
from qtbench.envs import layout
from qtbench.envs.scene import COUNTER_TOP, Scene, sample_counter_positions
from qtbench.envs.skill import Skill, Stage, holding, lifted, near_object

NEAR = 0.12
START_DISTANCE = 0.2


def sample(scene: Scene, ins: Instruction, rng: np.random.Generator) -> None:
    for drawer in DRAWERS:
        scene.set_drawer(drawer, rng.uniform(0.0, CLOSED_MAX))
    while True:
        obj_xy, target_xy = sample_counter_positions(rng, 2)
        if np.linalg.norm(obj_xy - target_xy) >= START_DISTANCE:
            break
    others = [o for o in OBJECTS if o not in (ins.obj, ins.target)]
    scene.place_on_counter(ins.obj, obj_xy)
    scene.place_on_counter(ins.target, target_xy)
    for obj, xy in zip(others, sample_counter_positions(rng, len(others), taken=[obj_xy, target_xy])):
        scene.place_on_counter(obj, xy)


def distance(scene: Scene, ins: Instruction) -> float:
    return float(np.linalg.norm(scene.object_pos(ins.obj)[:2] - scene.object_pos(ins.target)[:2]))


def success(scene: Scene, ins: Instruction) -> bool:
    return distance(scene, ins) < NEAR and scene.on_counter(ins.obj)


def near_target(state: np.ndarray, ins: Instruction) -> bool:
    gap = layout.object_pos(state, ins.obj)[:2] - layout.object_pos(state, ins.target)[:2]
    return holding(state, ins.obj) and bool(np.linalg.norm(gap) < NEAR)


STAGES = (
    Stage("reached_object", lambda s, ins: near_object(s, ins.obj)),
    Stage("grasped", lambda s, ins: holding(s, ins.obj)),
    Stage("lifted", lambda s, ins: lifted(s, ins.obj, COUNTER_TOP)),
    Stage("near_target", near_target),
)

SKILL = Skill("move_near", horizon=50, sample=sample, success=success, stages=STAGES, goal="placed")
