"""Scripted phase-machine plans, one per skill and style (Meta-World style).

A plan is a list of phases; each phase names a gripper-point target (a function of the
current state, read through layout's named fields), a gripper command and a completion
test. ``Plan.act`` drives a P-controller toward the current target. The ``Perturb`` values
(waypoint offsets, timing errors) are drawn per episode by the noise models in policies.py,
so one code path serves the expert, the human-like demonstrator and the erring collector.
STYLES lists each skill's plans: a robust style first, then a fragile one that needs more
precision (see the section "plans per skill and style").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qtbench.envs import layout
from qtbench.envs.instructions import OBJECTS, Instruction
from qtbench.envs.move_near import NEAR
from qtbench.envs.scene import (
    CABINET_FACE_Y,
    COUNTER_HIGH,
    COUNTER_LOW,
    COUNTER_TOP,
    DRAWER_FRONT_HEIGHT,
    DRAWER_FRONT_HALF_WIDTH,
    DRAWER_INNER_LOW,
    FINGER_HALF_DEPTH,
    FINGER_HALF_WIDTH,
    FOOTPRINT,
    HALF_LENGTH,
    KNOB_HALF_SIZE,
    KNOB_HEIGHT,
    KNOB_STANDOFF,
    OPEN_FINGER_X,
    PULL_OFFSET,
    REST_HEIGHT,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
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
    retries: int = 2  # how often a lost grasp is noticed and the pick started over


@dataclass
class Phase:
    name: str
    target: Callable[[np.ndarray], np.ndarray]
    grip: float
    done: Callable[[np.ndarray, np.ndarray, int], bool]  # (state, target, steps in phase)


def reachable(target: np.ndarray) -> np.ndarray:
    """The target clipped to the gripper's workspace (a plan never aims outside it)."""
    return np.clip(target, WORKSPACE_LOW, WORKSPACE_HIGH)


def reached(tol: float = REACH_TOL, timeout: int = PHASE_TIMEOUT):
    return lambda s, t, n: bool(np.linalg.norm(layout.gripper_pos(s) - t) < tol) or n >= timeout


def waited(steps: int = GRIP_STEPS):
    return lambda s, t, n: n >= steps


def opened(width: float = 0.08, timeout: int = 4):
    return lambda s, t, n: bool(layout.finger_opening(s) > width) or n >= timeout


def fixed(point: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    point = np.array(point, dtype=np.float64)
    return lambda s: point


@dataclass(frozen=True)
class Retry:
    """Start the plan over when ``ok(state)`` fails during one of ``phases`` (a lost grasp)."""

    ok: Callable[[np.ndarray], bool]
    phases: tuple[str, ...]
    limit: int


class Plan:
    """Runs phases in order; ``act`` returns the action toward the current phase's target."""

    def __init__(self, phases: list[Phase], max_displacement: float, retry: Retry | None = None):
        self.phases = phases
        self.max_displacement = max_displacement
        self.retry = retry
        self.retries = 0
        self.index = 0
        self.steps_in_phase = 0

    @property
    def phase(self) -> Phase:
        return self.phases[min(self.index, len(self.phases) - 1)]

    def target(self, state: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance past completed phases; the current target point and gripper command."""
        r = self.retry
        if r and self.retries < r.limit and self.phase.name in r.phases and not r.ok(state):
            self.retries += 1
            self.index, self.steps_in_phase = 0, 0
        while self.index < len(self.phases) - 1:
            phase = self.phases[self.index]
            if not phase.done(state, reachable(phase.target(state)), self.steps_in_phase):
                break
            self.index += 1
            self.steps_in_phase = 0
        return reachable(self.phase.target(state)), self.phase.grip

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


FINGER_SWEEP = (0.075, 0.015)  # half extent (x, y) of the region the opening fingers sweep


def counter_spot(state: np.ndarray, moving: str, near: np.ndarray, radius: float | None = None,
                 fingers: np.ndarray = np.zeros(2), toward: np.ndarray | None = None) -> np.ndarray:
    """A free counter point to put ``moving`` down: on a ring of ``radius`` around ``near``, the
    free one closest to ``toward`` (default: where ``moving`` is now, the near side), or, with
    no radius, the free grid point closest to ``near``. Free = clear of every other object's
    footprint and of the region the fingers sweep when they open (along x, around the point
    ``fingers`` from the object's centre where they hold it)."""
    if toward is None:
        toward = layout.object_pos(state, moving)[:2]
    if radius is None:
        xs, ys = np.meshgrid(np.linspace(COUNTER_LOW[0], COUNTER_HIGH[0], 15), np.linspace(COUNTER_LOW[1], -0.21, 6))
        cands = np.stack([xs.ravel(), ys.ravel()], 1)
        ok = np.array([not in_keep_out(c) for c in cands])
    else:
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        cands = near + radius * np.stack([np.cos(ang), np.sin(ang)], 1)
        ok = np.ones(len(cands), bool)
    ok &= np.all((cands >= COUNTER_LOW) & (cands <= COUNTER_HIGH), axis=1)
    others = [o for o in OBJECTS if o != moving]
    pos = np.array([layout.object_pos(state, o)[:2] for o in others])
    foot = np.array([FOOTPRINT[o] for o in others])
    gap = np.abs(cands[:, None, :] - pos[None])  # (candidates, others, 2)
    apart = np.linalg.norm(gap, axis=2) >= FOOTPRINT[moving] + foot + 0.012
    reach = np.abs(cands[:, None, :] + fingers[:2] - pos[None])  # from the fingers
    swept = (reach[..., 0] < FINGER_SWEEP[0] + foot) & (reach[..., 1] < FINGER_SWEEP[1] + foot)
    free = ok & np.all(apart & ~swept, axis=1)
    if not free.any():  # crowded: the point farthest from everything
        clearance = np.min(np.linalg.norm(gap, axis=2) - foot, axis=1)
        return cands[int(np.argmax(np.where(ok, clearance, -np.inf)))]
    pick = np.where(free)[0]
    origin = near if radius is None else toward
    return cands[pick[int(np.argmin(np.linalg.norm(cands[pick] - origin, axis=1)))]]


# ---- plans per skill and style ----------------------------------------------------------------
# Each skill has a robust style (listed first) and a fragile one that needs more precision. The
# fragile styles fail through contact geometry, never by chance: a finger riding over a lip, a
# push that overlaps the drawer front by millimetres, a grasp of an object's very end.
# drawer_open: a grasp closes the gripper point (between the fingertips; the fingers reach 6 cm
# up from it) at GRASP_HOLD from the knob's centre, the fingers pressed against the drawer front.
# It wraps the 5 cm wide knob: it holds from 3 cm too low to 3 cm too high, 3 cm to either side,
# and from 1.5 cm short to pressed against the front. A hook lowers the open gripper's left
# finger into the finger pull's groove (scene.PULL_OFFSET, 12 cm to the knob's right; the pull is
# 1.4 cm long) until it presses on the ledge, and pulls on the lip: aimed 4 mm too high it no
# longer presses on the ledge and rides over the 8 mm lip; 1.5 cm to a side it misses the 1.4 cm
# lip; landing on the lacquered lip, it slides off. (Windows measured with the noiseless plan, 3
# episodes per offset, tests/test_styles.py.)
GRASP_HOLD = np.array([0.0, KNOB_STANDOFF - FINGER_HALF_DEPTH - 0.002, -0.02])  # 2 mm short of the front
HOOK_PRESS = 0.003  # m below the ledge's top the hook aims its fingertip: pressed onto the ledge
HOOK_HOLD = PULL_OFFSET + [OPEN_FINGER_X, 0.0, -HOOK_PRESS]  # the left fingertip on the groove's middle
FRONT_TOUCH = 0.006  # fingers this close to the drawer front touch it: inserted as deep as they go
EDGE_OVERLAP = 0.005  # m of the drawer front's width the edge push covers
# drawer_close: where the closed fingers' centre pushes, from the knob's centre: on the knob's
# front face, or at the drawer front's corner (x toward the gripper's side; see drawer_close_edge).
KNOB_PUSH = np.array([0.0, -KNOB_HALF_SIZE[1] - FINGER_HALF_DEPTH, 0.0])
EDGE_PUSH = np.array([DRAWER_FRONT_HALF_WIDTH + FINGER_HALF_WIDTH - EDGE_OVERLAP, KNOB_STANDOFF - FINGER_HALF_DEPTH, 0.0])
# pick_place, move_near: an end grasp closes the fingers' centre END_INSET inside the object's
# near end (its -y end, toward the robot) with the fingertips TIP_DEPTH below its top, holding it
# by a corner (a grasp across the middle closes them low on its centre). move_near's styles also
# put the object down on opposite sides of the target (see _move_near): a grasp alone is no
# choice for a learned policy, which blends an end grasp and a centre grasp into a grasp between
# them that still holds, but a put-down halfway between the two sides lands on the target.
TIP_DEPTH = 0.02
END_INSET = 0.015


def drawer_open_grasp(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """Close the fingers around the whole knob (GRASP_HOLD), once within 8 mm of it (or once the
    fingers touch the drawer front), and pull the drawer open: holds when off by centimetres."""
    knob = lambda s: layout.handle_pos(s, ins.drawer) + GRASP_HOLD + p.grasp_offset  # noqa: E731
    k0 = knob(state)
    pull_to = k0 - np.array([0.0, 0.2 - p.pull_short, 0.0])

    def inserted(s: np.ndarray, target: np.ndarray, steps: int) -> bool:
        depth = layout.gripper_pos(s)[1] - layout.handle_pos(s, ins.drawer)[1]
        touching = depth > KNOB_STANDOFF - FINGER_HALF_DEPTH - FRONT_TOUCH
        return touching or reached(0.008)(s, target, steps)

    return Plan(
        [
            Phase("approach", lambda s: knob(s) - [0.0, 0.07, 0.0], OPEN, reached()),
            Phase("insert", knob, OPEN, inserted),
            Phase("grasp", knob, CLOSE, waited()),
            Phase("pull", fixed(pull_to), CLOSE, reached()),
            Phase("release", fixed(pull_to), OPEN, waited(99)),
        ],
        max_disp,
    )


def drawer_open_hook(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """Hook the open gripper's left finger into the finger pull (HOOK_HOLD): over the lip, down
    onto the ledge, and pull the drawer open by the lip; off by a few millimetres, the finger
    rides over the lip or slides off it."""
    point = lambda s: layout.handle_pos(s, ins.drawer) + HOOK_HOLD + p.grasp_offset  # noqa: E731
    pull_to = point(state) - np.array([0.0, 0.2 - p.pull_short, 0.0])
    return Plan(
        [
            Phase("approach", lambda s: point(s) + [0.0, -0.06, 0.03], OPEN, reached()),
            Phase("over", lambda s: point(s) + [0.0, 0.0, 0.03], OPEN, reached(0.004)),
            Phase("descend", point, OPEN, reached(0.006, timeout=6)),
            Phase("pull", fixed(pull_to), OPEN, reached()),
            Phase("lift", fixed(pull_to + [0.0, 0.0, 0.05]), OPEN, waited(99)),
        ],
        max_disp,
    )


def _drawer_push(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float,
                 contact: np.ndarray) -> Plan:
    """Closed fingers centred ``contact`` from the knob's centre (on a face) push the drawer shut."""
    point = lambda s: layout.handle_pos(s, ins.drawer) + contact + p.grasp_offset  # noqa: E731
    q0 = float(layout.drawer_pos(state, ins.drawer))
    push_to = point(state) + np.array([0.0, q0 + 0.015 - p.pull_short, 0.0])
    return Plan(
        [
            Phase("approach", lambda s: point(s) - [0.0, 0.07, 0.0], CLOSE, reached()),
            Phase("push", fixed(push_to), CLOSE, reached()),
            Phase("back off", fixed(push_to - [0.0, 0.08, 0.0]), CLOSE, waited(99)),
        ],
        max_disp,
    )


def drawer_close_knob(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """Push the knob's front face; off to a side, the fingers still meet the drawer front."""
    return _drawer_push(ins, state, p, max_disp, KNOB_PUSH)


def drawer_close_edge(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """Push the drawer front at its outer corner on the gripper's side: a few millimetres further
    out and the fingers pass beside the drawer and stop against the cabinet."""
    side = 1.0 if layout.gripper_pos(state)[0] >= layout.handle_pos(state, ins.drawer)[0] else -1.0
    return _drawer_push(ins, state, p, max_disp, EDGE_PUSH * [side, 1.0, 1.0])


def _pick_and_place(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float,
                    place_xy: np.ndarray, place_surface: float, carry_z: float,
                    hold: np.ndarray) -> Plan:
    """Grasp ``ins.obj`` with the gripper point ``hold`` from its centre (in the counter plane),
    carry it at ``carry_z`` and put it down with its centre at ``place_xy`` on a surface of
    height ``place_surface``."""
    obj = ins.obj
    o0 = layout.object_pos(state, obj)
    carry_z = carry_z + hold[2]  # held higher up, the object hangs lower: carry it that much higher
    below_centre = o0[2] - grasp_height(state, obj)  # gripper point below the object centre
    place = np.array([place_xy[0], place_xy[1], place_surface + REST_HEIGHT[obj] - below_centre + 0.012])
    place = place + hold + p.place_offset

    def grasp_at(s: np.ndarray) -> np.ndarray:
        """Where to close the fingers: the object where it is now (it may have moved)."""
        o = layout.object_pos(s, obj)
        return np.array([o[0], o[1], grasp_height(s, obj)]) + hold + p.grasp_offset

    def above(s: np.ndarray) -> np.ndarray:
        return np.append(grasp_at(s)[:2], carry_z)

    def lower_to(s: np.ndarray) -> np.ndarray:
        """Place point corrected for where the object really sits in the fingers now."""
        held_below = layout.object_pos(s, obj)[2] - layout.gripper_pos(s)[2]
        if abs(held_below - below_centre) > 0.03:  # not in the hand: keep the planned point
            return place
        return place + [0.0, 0.0, below_centre - held_below]

    def held(s: np.ndarray) -> bool:
        rel = layout.object_pos(s, obj) - layout.gripper_pos(s) + hold
        return bool(np.linalg.norm(rel[:2]) < 0.03 and abs(rel[2]) < 0.05 and layout.finger_opening(s) > 0.006)

    descend_done = reached(0.008)
    if p.close_early:
        early = p.close_early * max_disp
        descend_done = lambda s, t, n: layout.gripper_pos(s)[2] - t[2] < early or n >= PHASE_TIMEOUT  # noqa: E731
    transport_done = reached()
    if p.release_at is not None:
        transport_done = lambda s, t, n, k=p.release_at: n >= k or reached()(s, t, n)  # noqa: E731
    return Plan(
        [
            Phase("hover", above, OPEN, reached(0.02)),
            Phase("descend", grasp_at, OPEN, descend_done),
            Phase("grasp", grasp_at, CLOSE, waited()),
            Phase("lift", above, CLOSE, reached(0.02)),
            Phase("transport", fixed([place[0], place[1], carry_z]), CLOSE, transport_done),
            Phase("lower", lower_to, CLOSE, reached(0.01)),
            Phase("release", lower_to, OPEN, opened()),
            Phase("retreat", fixed(place + [0.0, 0.0, 0.1]), OPEN, waited(99)),
        ],
        max_disp,
        retry=Retry(held, ("lift", "transport", "lower"), p.retries),
    )


def end_hold(state: np.ndarray, obj: str) -> np.ndarray:
    """The hold of an end grasp, from where a grasp across the middle closes (grasp_height):
    END_INSET inside the object's near end along its length (y, as it lies at reset), the
    gripper point TIP_DEPTH below the object's top, or at its centre's height if that is lower
    (a ball held above its middle squeezes out)."""
    centre = layout.object_pos(state, obj)[2]
    tips = min(centre + REST_HEIGHT[obj] - TIP_DEPTH, centre)
    return np.array([0.0, -(HALF_LENGTH[obj] - END_INSET), tips - grasp_height(state, obj)])


def _pick_place(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float, hold: np.ndarray) -> Plan:
    q = float(layout.drawer_pos(state, ins.drawer))
    knob = layout.handle_pos(state, ins.drawer)
    base_z = knob[2] - KNOB_HEIGHT  # height of the drawer body origin
    front_top = base_z + DRAWER_FRONT_HEIGHT
    obj_h = 2 * REST_HEIGHT[ins.obj]
    carry_z = front_top + obj_h + CARRY_CLEARANCE
    if ins.direction == "out":
        place_xy = counter_spot(state, ins.obj, near=np.array([0.0, -0.24]), fingers=hold)
        return _pick_and_place(ins, state, p, max_disp, place_xy, COUNTER_TOP, carry_z, hold)
    # "in": into the middle of the exposed part of the open drawer.
    place_xy = np.array([knob[0], CABINET_FACE_Y - 0.5 * q - 0.025])
    return _pick_and_place(ins, state, p, max_disp, place_xy, base_z + DRAWER_INNER_LOW[2], carry_z, hold)


def pick_place_centre(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """A top grasp across the object's middle."""
    return _pick_place(ins, state, p, max_disp, np.zeros(3))


def pick_place_end(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """A quick grasp of the object's near end, high on it (end_hold): 1-1.5 cm further out the
    fingers' edges meet a rounded end and squeeze it out, or close past a flat one; a few
    millimetres higher they close over it."""
    return _pick_place(ins, state, p, max_disp, end_hold(state, ins.obj))


def _move_near(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float, hold: np.ndarray,
               far_side: bool) -> Plan:
    """Carry ``ins.obj`` over the clutter and put it down beside the target, on the side it comes
    from or, ``far_side``, beyond the target (the free ring point nearest the object's start
    mirrored through the target): where the counter leaves room beyond the target, the two
    put-downs are a ring's diameter apart and halfway between them stands the target."""
    obj_xy, target_xy = layout.object_pos(state, ins.obj)[:2], layout.object_pos(state, ins.target)[:2]
    radius = min(FOOTPRINT[ins.obj] + FOOTPRINT[ins.target] + 0.015, NEAR - 0.02)
    toward = 2 * target_xy - obj_xy if far_side else None
    place_xy = counter_spot(state, ins.obj, near=target_xy, radius=radius, fingers=hold, toward=toward)
    carry_z = 0.07 + 2 * REST_HEIGHT[ins.obj] + CARRY_CLEARANCE  # over the tallest object
    return _pick_and_place(ins, state, p, max_disp, place_xy, COUNTER_TOP, carry_z, hold)


def move_near_centre(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """A top grasp across the object's middle, carried over the clutter and put down on the
    near side of the target."""
    return _move_near(ins, state, p, max_disp, np.zeros(3), far_side=False)


def move_near_end(ins: Instruction, state: np.ndarray, p: Perturb, max_disp: float) -> Plan:
    """An end grasp (as pick_place_end), carried over the target and put down beyond it: a
    policy that mixes this with the centre style's near-side put-down lowers the object onto
    the target."""
    return _move_near(ins, state, p, max_disp, end_hold(state, ins.obj), far_side=True)


# The styles of each skill, the robust one first.
STYLES: dict[str, dict[str, Callable[[Instruction, np.ndarray, Perturb, float], Plan]]] = {
    "drawer_open": {"grasp": drawer_open_grasp, "hook": drawer_open_hook},
    "drawer_close": {"knob": drawer_close_knob, "edge": drawer_close_edge},
    "pick_place": {"centre": pick_place_centre, "end": pick_place_end},
    "move_near": {"centre": move_near_centre, "end": move_near_end},
}
