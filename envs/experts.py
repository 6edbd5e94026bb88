"""Scripted phase-machine experts, one plan per skill (Meta-World style).

A plan is a list of phases; each phase names a gripper-point target (a function of the
current state, read through layout's named fields), a gripper command and a completion
test. ``Plan.act`` drives a P-controller toward the current target. The ``Perturb`` values
(waypoint offsets, timing errors) are drawn per episode by the noise models in policies.py,
so one code path serves the expert, the human-like demonstrator and the erring collector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qtbench.envs import layout
from qtbench.envs.instructions import OBJECTS, Instruction
from qtbench.envs.scene import (
    CABINET_FACE_Y,
    COUNTER_HIGH,
    COUNTER_LOW,
    COUNTER_TOP,
    DRAWER_FRONT_HEIGHT,
    DRAWER_INNER_LOW,
    REST_HEIGHT,
    in_keep_out,
)

OPEN, CLOSE = -1.0, 1.0
REACH_TOL = 0.012
PHASE_TIMEOUT = 15  # a reach phase that has not converged after this many steps moves on
GRIP_STEPS = 2  # steps to let the fingers close or open
CARRY_CLEARANCE = 0.05


@dataclass
class Perturb:
    """Per-episode deviations from the ideal plan (all zero for the noiseless expert)."""

    grasp_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # added to grasp points
    place_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # added to place points
    close_early: int = 0  # close the gripper this many steps before the grasp point is reached
    release_at: int | None = None  # transport step at which the object is dropped (an error)
    pull_short: float = 0.0  # m of drawer travel left undone


@dataclass
class Phase:
    name: str
    target: Callable[[np.ndarray], np.ndarray]
    grip: float
    done: Callable[[np.ndarray, np.ndarray, int], bool]  # (state, target, steps in phase)


def reached(tol: float = REACH_TOL, timeout: int = PHASE_TIMEOUT):
    return lambda s, t, n: bool(np.linalg.norm(layout.gripper_pos(s) - t) < tol) or n >= timeout


def waited(steps: int = GRIP_STEPS):
    return lambda s, t, n: n >= steps


def fixed(point: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    point = np.array(point, dtype=np.float64)
    return lambda s: point


class Plan:
    """Runs phases in order; ``act`` returns the action toward the current phase's target."""

    def __init__(self, phases: list[Phase], max_displacement: float):
        self.phases = phases
        self.max_displacement = max_displacement
        self.index = 0
        self.steps_in_phase = 0

    @property
    def phase(self) -> Phase:
        return self.phases[min(self.index, len(self.phases) - 1)]

    def target(self, state: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance past completed phases; the current target point and gripper command."""
        while self.index < len(self.phases) - 1:
            phase = self.phases[self.index]
            if not phase.done(state, phase.target(state), self.steps_in_phase):
                break
            self.index += 1
            self.steps_in_phase = 0
        return self.phase.target(state), self.phase.grip

    def act(self, state: np.ndarray, speed: float = 1.0) -> np.ndarray:
        target, grip = self.target(state)
        self.steps_in_phase += 1
        move = (target - layout.gripper_pos(state)) / self.max_displacement
        peak = np.max(np.abs(move))
        if peak > speed:
            move *= speed / peak  # straight-line motion at the commanded speed
        return np.append(move, grip).astype(np.float32)


# ---- geometry helpers --------------------------------------------------------------------
def grasp_height(state: np.ndarray, obj: str) -> float:
    """Gripper-point height for grasping ``obj`` where it rests now."""
    z = layout.object_pos(state, obj)[2]
    surface = z - REST_HEIGHT[obj]
    return max(surface + 0.005, z - 0.012)


def counter_spot(state: np.ndarray, moving: str, near: np.ndarray, radius: float | None = None) -> np.ndarray:
    """A free counter point for ``moving``: on a ring of ``radius`` around ``near`` (or, with
    no radius, the free grid point closest to ``near``), as far from other objects as needed."""
    others = [layout.object_pos(state, o)[:2] for o in OBJECTS if o != moving]
    if radius is None:
        xs, ys = np.meshgrid(np.linspace(COUNTER_LOW[0], COUNTER_HIGH[0], 15), np.linspace(COUNTER_LOW[1], -0.21, 6))
        cands = np.stack([xs.ravel(), ys.ravel()], 1)
    else:
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        cands = near + radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    ok = np.all((cands >= COUNTER_LOW) & (cands <= COUNTER_HIGH), axis=1)
    if radius is None:
        ok &= np.array([not in_keep_out(c) for c in cands])
    clearance = np.min(np.linalg.norm(cands[:, None] - np.array(others)[None], axis=2), axis=1)
    if radius is not None:  # the target itself sits at the ring's centre: ignore it here
        others_far = [o for o in others if np.linalg.norm(o - near) > 1e-6]
        clearance = np.min(np.linalg.norm(cands[:, None] - np.array(others_far)[None], axis=2), axis=1)
    free = ok & (clearance >= 0.085)
    pick = np.where(free)[0] if free.any() else np.where(ok)[0]
    dist = np.linalg.norm(cands[pick] - layout.object_pos(state, moving)[:2], axis=1)
    if radius is None:
        dist = np.linalg.norm(cands[pick] - near, axis=1)
    return cands[pick[int(np.argmin(dist))]]


# ---- plans per skill -------------------------------------------------------------------------
def drawer_open_plan(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    knob = lambda s: layout.handle_pos(s, ins.drawer) + p.grasp_offset  # noqa: E731
    k0 = knob(state)
    pull_to = k0 - np.array([0.0, 0.2 - p.pull_short, 0.0])
    return Plan(
        [
            Phase("approach", lambda s: knob(s) - [0.0, 0.07, 0.0], OPEN, reached()),
            Phase("insert", knob, OPEN, reached(0.008)),
            Phase("grasp", knob, CLOSE, waited()),
            Phase("pull", fixed(pull_to), CLOSE, reached()),
            Phase("release", fixed(pull_to), OPEN, waited(99)),
        ],
        max_disp,
    )


def drawer_close_plan(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    knob = lambda s: layout.handle_pos(s, ins.drawer) + p.grasp_offset  # noqa: E731
    k0 = knob(state)
    q0 = float(layout.drawer_pos(state, ins.drawer))
    # Closed fingers push on the knob's front face (0.037 in front of its centre).
    push_to = k0 + np.array([0.0, q0 - 0.037 + 0.015 - p.pull_short, 0.0])
    return Plan(
        [
            Phase("approach", lambda s: knob(s) - [0.0, 0.07, 0.0], CLOSE, reached()),
            Phase("push", fixed(push_to), CLOSE, reached()),
            Phase("back off", fixed(push_to - [0.0, 0.08, 0.0]), CLOSE, waited(99)),
        ],
        max_disp,
    )


def _pick_and_place(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float,
                    place_xy: np.ndarray, place_surface: float, carry_z: float) -> Plan:
    obj = ins.obj
    o0 = layout.object_pos(state, obj)
    grasp = np.array([o0[0], o0[1], grasp_height(state, obj)]) + p.grasp_offset
    below_centre = o0[2] - grasp[2]  # how far the gripper point sits below the object centre
    place = np.array([place_xy[0], place_xy[1], place_surface + REST_HEIGHT[obj] - below_centre + 0.008])
    place = place + p.place_offset
    hover = np.array([grasp[0], grasp[1], max(carry_z, grasp[2] + 0.08)])
    descend_done = reached(0.008)
    if p.close_early:
        early = p.close_early * max_disp
        descend_done = lambda s, t, n: layout.gripper_pos(s)[2] - t[2] < early or n >= PHASE_TIMEOUT  # noqa: E731
    transport_done = reached()
    if p.release_at is not None:
        transport_done = lambda s, t, n, k=p.release_at: n >= k or reached()(s, t, n)  # noqa: E731
    return Plan(
        [
            Phase("hover", fixed(hover), OPEN, reached(0.02)),
            Phase("descend", fixed(grasp), OPEN, descend_done),
            Phase("grasp", fixed(grasp), CLOSE, waited()),
            Phase("lift", fixed([grasp[0], grasp[1], carry_z]), CLOSE, reached(0.02)),
            Phase("transport", fixed([place[0], place[1], carry_z]), CLOSE, transport_done),
            Phase("lower", fixed(place), CLOSE, reached(0.01)),
            Phase("release", fixed(place), OPEN, waited()),
            Phase("retreat", fixed(place + [0.0, 0.0, 0.1]), OPEN, waited(99)),
        ],
        max_disp,
    )


def pick_place_plan(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    q = float(layout.drawer_pos(state, ins.drawer))
    knob = layout.handle_pos(state, ins.drawer)
    base_z = knob[2] - 0.05  # drawer body origin height (the knob sits 0.05 above it)
    front_top = base_z + DRAWER_FRONT_HEIGHT
    obj_h = 2 * REST_HEIGHT[ins.obj]
    carry_z = front_top + obj_h + CARRY_CLEARANCE
    if ins.direction == "out":
        place_xy = counter_spot(state, ins.obj, near=np.array([0.0, -0.24]))
        return _pick_and_place(ins, state, p, max_disp, place_xy, COUNTER_TOP, carry_z)
    # "in": into the middle of the exposed part of the open drawer.
    place_xy = np.array([knob[0], CABINET_FACE_Y - 0.5 * q + 0.005])
    return _pick_and_place(ins, state, p, max_disp, place_xy, base_z + DRAWER_INNER_LOW[2], carry_z)


def move_near_plan(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    target_xy = layout.object_pos(state, ins.target)[:2]
    place_xy = counter_spot(state, ins.obj, near=target_xy, radius=0.08)
    carry_z = 0.07 + 2 * REST_HEIGHT[ins.obj] + CARRY_CLEARANCE
    return _pick_and_place(ins, state, p, max_disp, place_xy, COUNTER_TOP, carry_z)


PLANS = {
    "drawer_open": drawer_open_plan,
    "drawer_close": drawer_close_plan,
    "pick_place": pick_place_plan,
    "move_near": move_near_plan,
}
