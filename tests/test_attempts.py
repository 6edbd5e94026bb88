"""The attempted-style instrument (envs/attempts.py): it names the style a scripted policy
pinned to one style executed, on every skill, and no style for an episode without contact."""

from __future__ import annotations

import numpy as np
import pytest

from qtbench.envs import make_env
from qtbench.envs import layout
from qtbench.envs.attempts import (AT_OTHER, AT_TARGET, HELD_AT_LIMIT, LET_GO_AFTER, NEVER_CLOSED, NEVER_HELD,
                                   NO_ATTEMPT, ON_NOTHING, Closure, attempted_style, failures_profile,
                                   first_closure, how_it_ended, summarise_closures, summarise_endings)
from qtbench.envs.base import SKILLS_BY_NAME
from qtbench.envs.scene import COUNTER_TOP
from qtbench.envs.skill import holding, lifted
from qtbench.funnel import ending_line
from qtbench.envs.plans import STYLES
from qtbench.envs.instructions import BY_TEXT
from qtbench.envs.policies import ROLES, make_policy

CELLS = [(skill, style) for skill, styles in STYLES.items() for style in styles]


def states_of(env, policy, seed: int) -> tuple[list[np.ndarray], dict]:
    obs, info = env.reset(seed=seed)
    policy.reset(obs, info)
    states, done = [obs["state"]], False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        states.append(obs["state"])
        done = terminated or truncated
    return states, info


@pytest.mark.parametrize("skill, style", CELLS)
def test_names_the_style_a_scripted_policy_executed(skill, style):
    env = make_env(skill)
    policy = make_policy("demo", env, np.random.default_rng(0), style)
    named = []
    for seed in range(6):
        states, info = states_of(env, policy, 70_000 + seed)
        named.append(attempted_style(BY_TEXT[info["instruction"]], states))
    assert named.count(style) >= 5, named


@pytest.mark.parametrize("skill", list(STYLES))
def test_no_contact_is_no_attempt(skill):
    """A hand that only rises never closes on (or pushes) anything: no style attempted."""
    env = make_env(skill)
    obs, info = env.reset(seed=1)
    states = [obs["state"]]
    for _ in range(10):
        obs, *_ = env.step(np.array([0.0, 0.0, 1.0, -1.0], np.float32))
        states.append(obs["state"])
    assert attempted_style(BY_TEXT[info["instruction"]], states) is None


@pytest.mark.parametrize("skill", ["drawer_open", "pick_place", "move_near"])
@pytest.mark.parametrize("role", ROLES)
def test_the_expert_first_closes_at_its_target(skill, role):
    env = make_env(skill)
    policy = make_policy("expert", env, np.random.default_rng(0), role)
    hooks = (skill, role) == ("drawer_open", "fragile")  # pulls with a finger of the open hand
    for seed in range(3):
        states, info = states_of(env, policy, 71_000 + seed)
        closure = first_closure(BY_TEXT[info["instruction"]], states)
        if hooks:
            assert info["success"] and closure == Closure(NEVER_CLOSED, None, None)
        else:
            assert closure.verdict == AT_TARGET and closure.distance < 0.05, closure


def _hand(state: np.ndarray, at: np.ndarray, opening: float) -> np.ndarray:
    out = np.array(state, np.float64)
    out[layout.FIELDS["gripper_pos"].slice] = at
    out[layout.FIELDS["finger_opening"].slice] = opening
    return out


def test_closures_at_another_knob_on_nothing_and_never():
    """Hand-placed states: open above the scene, then closed at a place of our choosing."""
    env = make_env("drawer_open")
    obs, _ = env.reset(seed=3)
    start, ins = obs["state"], BY_TEXT["open the top drawer"]
    away = layout.handle_pos(start, "top") + np.array([0.0, -0.2, 0.2])
    opened = _hand(start, away, 0.098)

    def closed_at(point):
        return first_closure(ins, [opened, _hand(start, point, 0.0)])

    assert closed_at(layout.handle_pos(start, "top")).verdict == AT_TARGET
    other = closed_at(layout.handle_pos(start, "bottom"))
    assert other.verdict == AT_OTHER and other.step == 1
    assert other.distance == pytest.approx(float(np.linalg.norm(layout.handle_pos(start, "bottom")
                                                                - layout.handle_pos(start, "top"))))
    short = closed_at(layout.handle_pos(start, "top") + np.array([0.0, -0.08, 0.0]))
    assert short.verdict == ON_NOTHING and short.distance == pytest.approx(0.08)
    assert short.offset == pytest.approx((0.0, -0.08, 0.0))
    assert first_closure(ins, [opened, opened]).verdict == NEVER_CLOSED
    # fingers closed from the start count only once they have been open
    assert first_closure(ins, [_hand(start, away, 0.0), opened]).verdict == NEVER_CLOSED
    assert first_closure(BY_TEXT["close the top drawer"], [opened]) is None
    summary = summarise_closures([closed_at(layout.handle_pos(start, "top")), other, short, None])
    counts = summary["counts"]
    assert counts == {AT_TARGET: 1, AT_OTHER: 1, ON_NOTHING: 1, NEVER_CLOSED: 0}
    assert summary["failed_episodes"] == 3 and summary["on_nothing_median_m"] == pytest.approx(0.08)
    assert summary["on_nothing_median_abs_offset_m"] == pytest.approx([0.0, 0.08, 0.0])  # missed along y
    assert summarise_closures([None]) is None


@pytest.mark.parametrize("skill", ["pick_place", "move_near"])
def test_how_an_object_episode_ended(skill):
    """Cut from the expert's episode: a held object that is then not in the hand was let go
    after the deepest stage of that moment (at the goal, while carrying); cut while carrying,
    it still held the object at the time limit; before the grasp, it never held it."""
    env = make_env(skill)
    policy = make_policy("expert", env, np.random.default_rng(0), "robust")
    states, info = states_of(env, policy, 81_000)
    ins = BY_TEXT[info["instruction"]]
    at_goal = SKILLS_BY_NAME[skill].stages[-1]  # near_target / over_target, the stage before placed
    there = next(i for i, s in enumerate(states) if at_goal.reached(s, ins))
    assert info["success"] and holding(states[there], ins.obj)
    # a state without the object in the hand (the reset state) after each: let go there
    assert how_it_ended(ins, states[:there + 1] + [states[0]]) == LET_GO_AFTER + at_goal.name
    carrying = next(i for i, s in enumerate(states) if lifted(s, ins.obj, COUNTER_TOP))
    assert how_it_ended(ins, states[:carrying + 1]) == HELD_AT_LIMIT
    assert how_it_ended(ins, states[:carrying + 1] + [states[0]]) == LET_GO_AFTER + "lifted"
    assert how_it_ended(ins, states[:1]) == NEVER_HELD
    assert how_it_ended(BY_TEXT[make_env("drawer_open").reset(seed=0)[1]["instruction"]], states) is None


def test_failures_profile_counts_styles_and_endings_per_skill():
    """Two cut pick_place episodes of the robust style (one never grasped, one cut while
    carrying) and a drawer_open hand that only rises: counted per skill, endings only for
    the object skill."""
    env = make_env("pick_place")
    states, info = states_of(env, make_policy("expert", env, np.random.default_rng(0), "robust"), 81_000)
    ins = BY_TEXT[info["instruction"]]
    carrying = next(i for i, s in enumerate(states) if lifted(s, ins.obj, COUNTER_TOP))
    drawer = make_env("drawer_open")
    obs, drawer_info = drawer.reset(seed=1)
    rising = [obs["state"], drawer.step(np.array([0.0, 0.0, 1.0, -1.0], np.float32))[0]["state"]]
    profile = failures_profile([(info["instruction"], states[:1]), (info["instruction"], states[:carrying + 1]),
                                (drawer_info["instruction"], rising)])
    assert list(profile) == ["drawer_open", "pick_place"]
    assert profile["drawer_open"] == {"episodes": 1, "attempted": {NO_ATTEMPT: 1}, "endings": None}
    robust = list(STYLES["pick_place"])[0]
    assert profile["pick_place"]["attempted"] == {NO_ATTEMPT: 1, robust: 1}
    assert profile["pick_place"]["endings"] == summarise_endings("pick_place", [NEVER_HELD, HELD_AT_LIMIT])


def test_endings_are_counted_in_report_order():
    endings = [HELD_AT_LIMIT, LET_GO_AFTER + "lifted", LET_GO_AFTER + "lifted"]
    summary = summarise_endings("move_near", endings)
    assert summary == {"failed_episodes": 3, "counts": {
        NEVER_HELD: 0, LET_GO_AFTER + "grasped": 0, LET_GO_AFTER + "lifted": 2,
        LET_GO_AFTER + "near_target": 0, HELD_AT_LIMIT: 1}}
    assert summarise_endings("move_near", []) is None
    shuffled = dict(summary, counts=dict(sorted(summary["counts"].items())))  # as eval.json stores it
    assert ending_line("move_near", shuffled) == ("failed episodes (3) ended: never held the object 0%, let go after grasped 0%, "
                                    "let go after lifted 67%, let go after near_target 0%, "
                                    "still held it at the time limit 33%")
