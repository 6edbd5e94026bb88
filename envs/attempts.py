"""Which demonstrator style an episode attempted, read from its states alone (any policy).

The styles of a skill (plans.STYLES) differ in where the gripper meets what it acts on:
the knob or the finger pull, the drawer front or the object. At the skill's contact moment (the
first state where the fingers are closed at the knob, the open hand's left fingertip is at the
finger pull (skill.near_pull) or the drawer has moved CONTACT_MOVE out for drawer_open; the
drawer has moved CONTACT_MOVE in for drawer_close; the fingers are closed on the object for
pick_place and move_near), the gripper point's offset from the knob's or the object's centre
is compared with each style's nominal offset (plans.*_HOLD, *_PUSH, grasp_height, end_hold) on
the axes that tell them apart, sides folded (an edge push may be on either side). The nearest style is the attempt; an
episode without a contact moment attempted none (None).

This is how a learned policy, which has no style, is scored per style: its failures are
counted against the style it was executing when it met the handle or the object
(``style_tally`` counts attempts and successes per style, for evaluation and collection alike).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from qtbench.envs import layout, move_near, pick_place
from qtbench.envs.instructions import BY_TEXT, DRAWERS, OBJECTS, Instruction
from qtbench.envs.plans import EDGE_PUSH, GRASP_HOLD, HOOK_HOLD, KNOB_PUSH, STYLES, end_hold, grasp_height
from qtbench.envs.skill import fingers_closed, holding, near_object, near_pull

NO_ATTEMPT = "none"  # the name reports give an episode without contact
CONTACT_MOVE = 0.005  # m the drawer must have moved for the hand to count as in contact
# Fingers closed farther than this from the knob's centre closed on nothing near it.
KNOB_REACH = 0.045


def _fold(offset: np.ndarray, axis: int | None) -> np.ndarray:
    out = np.array(offset, dtype=np.float64)
    if axis is not None:
        out[axis] = abs(out[axis])
    return out


def _nearest(offset: np.ndarray, nominal: dict[str, np.ndarray], axes: list[int], fold: int | None) -> str:
    seen = _fold(offset, fold)[axes]
    return min(nominal, key=lambda style: float(np.linalg.norm(seen - _fold(nominal[style], fold)[axes])))


def attempted_style(ins: Instruction, states: Sequence[np.ndarray]) -> str | None:
    """The style of ``ins.skill`` that an episode (its observed states, reset state first)
    attempted, or None when it never made contact (see the module doc)."""
    states = [np.asarray(s, np.float64) for s in states]
    robust, fragile = STYLES[ins.skill]  # names, the robust one first
    if ins.skill == "drawer_open":
        start = float(layout.drawer_pos(states[0], ins.drawer))
        for s in states:
            offset = layout.gripper_pos(s) - layout.handle_pos(s, ins.drawer)
            closed_at_knob = fingers_closed(s) and np.linalg.norm(offset) < KNOB_REACH
            moved = float(layout.drawer_pos(s, ins.drawer)) >= start + CONTACT_MOVE
            if closed_at_knob or near_pull(s, ins.drawer) or moved:
                return _nearest(offset, {robust: GRASP_HOLD, fragile: HOOK_HOLD}, [0], None)
        return None
    if ins.skill == "drawer_close":
        start = float(layout.drawer_pos(states[0], ins.drawer))
        for s in states:
            if float(layout.drawer_pos(s, ins.drawer)) <= start - CONTACT_MOVE:
                offset = layout.gripper_pos(s) - layout.handle_pos(s, ins.drawer)
                return _nearest(offset, {robust: KNOB_PUSH, fragile: EDGE_PUSH}, [0], fold=0)
        return None
    # pick_place, move_near: fingers closed low across the object's middle, or high on its near end
    for s in states:
        if fingers_closed(s) and near_object(s, ins.obj):
            offset = layout.gripper_pos(s) - layout.object_pos(s, ins.obj)
            low = np.array([0.0, 0.0, grasp_height(s, ins.obj) - layout.object_pos(s, ins.obj)[2]])
            return _nearest(offset, {robust: low, fragile: low + end_hold(s, ins.obj)}, [1, 2], None)
    return None



# ---- where the fingers first closed (reaching failures) ------------------------------------
# Verdicts of first_closure, in report order.
NEVER_CLOSED = "never closed"
AT_TARGET = "at the instructed target"
AT_OTHER = "at another drawer or object"
ON_NOTHING = "on nothing"
CLOSURE_VERDICTS = (AT_TARGET, AT_OTHER, ON_NOTHING, NEVER_CLOSED)


@dataclass(frozen=True)
class Closure:
    """Where an episode first closed its fingers, relative to what its instruction acts on."""

    verdict: str  # one of CLOSURE_VERDICTS
    # gripper point minus the instructed knob's or object's centre then, world axes (m); None: never closed
    offset: tuple[float, float, float] | None
    step: int | None  # index of the state in which the fingers were first seen closed

    @property
    def distance(self) -> float | None:
        """m from the gripper point to the instructed knob or object (None: never closed)."""
        return None if self.offset is None else float(np.linalg.norm(self.offset))


def first_closure(ins: Instruction, states: Sequence[np.ndarray]) -> Closure | None:
    """Where the fingers first closed (after being open) in an episode of a grasping skill
    (drawer_open, pick_place, move_near; None for drawer_close, which pushes).

    At the instructed knob (within KNOB_REACH of its centre) or object (``near_object``, along
    its length): the reach worked and any failure came later. At another drawer's knob or
    another object: the policy went for the wrong thing (a grounding error). On nothing: it
    closed in free space (short of the target or past it; ``offset`` says along which axes). Never
    closed: it includes drawer_open's hook, which pulls with a finger of the open hand.
    """
    if ins.skill == "drawer_close":
        return None
    was_open = False
    for step, s in enumerate(np.asarray(st, np.float64) for st in states):
        if not fingers_closed(s):
            was_open = True
            continue
        if not was_open:
            continue
        if ins.skill == "drawer_open":
            mine, target = ins.drawer, layout.handle_pos(s, ins.drawer)
            near = {d for d in DRAWERS if np.linalg.norm(layout.gripper_pos(s) - layout.handle_pos(s, d)) < KNOB_REACH}
        else:
            mine, target = ins.obj, layout.object_pos(s, ins.obj)
            near = {o for o in OBJECTS if near_object(s, o)}
        verdict = AT_TARGET if mine in near else AT_OTHER if near else ON_NOTHING
        return Closure(verdict, tuple(float(v) for v in layout.gripper_pos(s) - target), step)
    return Closure(NEVER_CLOSED, None, None)


def summarise_closures(closures: Iterable[Closure | None]) -> dict[str, Any] | None:
    """Episodes per verdict, and how far the closures on nothing missed, for reports.

    ``{"failed_episodes": n, "counts": {verdict: episodes}, "on_nothing_median_m": m,
    "on_nothing_median_abs_offset_m": [x, y, z]}``: every verdict of CLOSURE_VERDICTS in order;
    the median distance and the median of each axis's absolute offset (which axes the policy
    gets wrong) over the closures on nothing, None without one; None entries (drawer_close)
    skipped; the whole summary None without any closure.
    """
    scored = [c for c in closures if c is not None]
    if not scored:
        return None
    counts = Counter(c.verdict for c in scored)
    missed = [c for c in scored if c.verdict == ON_NOTHING]
    return {"failed_episodes": len(scored), "counts": {verdict: counts[verdict] for verdict in CLOSURE_VERDICTS},
            "on_nothing_median_m": statistics.median(c.distance for c in missed) if missed else None,
            "on_nothing_median_abs_offset_m":
                [float(m) for m in np.median(np.abs([c.offset for c in missed]), axis=0)] if missed else None}


def style_tally(attempts: Iterable[tuple[str, bool]]) -> dict[str, dict[str, Any]]:
    """``{style: {"attempts", "successes", "success_rate"}}`` of (style attempted, success)
    pairs, styles sorted: the shape of eval.json's and the failures manifest's ``per_attempted_style``."""
    counts: dict[str, list[int]] = {}
    for style, success in attempts:
        tally = counts.setdefault(style, [0, 0])
        tally[0] += 1
        tally[1] += int(success)
    return {style: {"attempts": a, "successes": s, "success_rate": s / a} for style, (a, s) in sorted(counts.items())}


# ---- how a failed episode of an object skill ended (carrying and placing failures) ----------
NEVER_HELD = "never held the object"
HELD_AT_LIMIT = "still held it at the time limit"
LET_GO_AFTER = "let go after "  # + the deepest stage that held when the object was last held
OBJECT_SKILLS = {m.SKILL.name: m.SKILL for m in (pick_place, move_near)}


def how_it_ended(ins: Instruction, states: Sequence[np.ndarray]) -> str | None:
    """How an episode of pick_place or move_near (its observed states, reset state first) ended
    with its object: ``NEVER_HELD``; ``HELD_AT_LIMIT`` (too slow: the time limit came first); or
    let go, after the last of the skill's stages that held in the last state the object was held
    ("let go after lifted": dropped while carrying; "let go after near_target": released at the
    goal, so a failure there is in the placing). The stage funnel says how far an episode got;
    this says where it lost the object. None for the drawer skills."""
    skill = OBJECT_SKILLS.get(ins.skill)
    if skill is None:
        return None
    held = [i for i, s in enumerate(states) if holding(np.asarray(s, np.float64), ins.obj)]
    if not held:
        return NEVER_HELD
    if held[-1] == len(states) - 1:
        return HELD_AT_LIMIT
    last = np.asarray(states[held[-1]], np.float64)
    passed = [stage.name for stage in skill.stages if stage.reached(last, ins)]
    return LET_GO_AFTER + passed[-1]


def failures_profile(failed: Iterable[tuple[str, Sequence[np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """What failed episodes, given as (instruction, states), hold per skill (skills sorted):
    ``{"episodes": n, "attempted": {style: episodes}`` (styles sorted, NO_ATTEMPT without
    contact), ``"endings": summarise_endings`` (None for the drawer skills)``}``."""
    attempted: dict[str, Counter] = {}
    endings: dict[str, list[str]] = {}
    for instruction, states in failed:
        ins = BY_TEXT[instruction]
        attempted.setdefault(ins.skill, Counter())[attempted_style(ins, states) or NO_ATTEMPT] += 1
        ending = how_it_ended(ins, states)
        if ending is not None:
            endings.setdefault(ins.skill, []).append(ending)
    return {skill: {"episodes": sum(styles.values()), "attempted": dict(sorted(styles.items())),
                    "endings": summarise_endings(skill, endings.get(skill, []))}
            for skill, styles in sorted(attempted.items())}


def ending_verdicts(skill: str) -> tuple[str, ...]:
    """Every verdict ``how_it_ended`` can give for ``skill``'s episodes, in report order."""
    stages = [stage.name for stage in OBJECT_SKILLS[skill].stages if stage.name != "reached_object"]
    return (NEVER_HELD, *(LET_GO_AFTER + name for name in stages), HELD_AT_LIMIT)


def summarise_endings(skill: str, endings: Iterable[str]) -> dict[str, Any] | None:
    """``{"failed_episodes": n, "counts": {verdict: episodes}}`` over failed episodes' endings
    (every verdict of ``ending_verdicts`` in order); None without any."""
    counts = Counter(endings)
    if not counts:
        return None
    return {"failed_episodes": sum(counts.values()), "counts": {v: counts[v] for v in ending_verdicts(skill)}}
