"""Stage predicates on hand-set states, their order, and the scripted policies passing them."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from qtbench.envs import layout, make_env
from qtbench.envs.base import SKILLS_BY_NAME
from qtbench.envs.instructions import BY_TEXT, instructions_for
from qtbench.envs.policies import make_policy
from qtbench.envs.scene import FINGER_TRAVEL, REST_HEIGHT, Scene
from qtbench.envs.skill import NO_STAGE, StageProgress

HOLD_Q = 0.03  # finger joint position that leaves a 0.038 m gap: closed on an object


@pytest.fixture()
def scene() -> Scene:
    env = make_env("all").unwrapped
    env.reset(seed=0, options={"instruction": "move the red can near the orange"})
    return env.scene


def state_with(scene: Scene, gripper=None, opening_q: float = 0.0, drawers=None, objects=None) -> np.ndarray:
    for drawer, q in (drawers or {}).items():
        scene.set_drawer(drawer, q)
    for obj, pos in (objects or {}).items():
        scene.set_object(obj, np.asarray(pos, float))
    mujoco.mj_forward(scene.model, scene.data)
    if gripper is not None:
        scene.set_gripper(np.asarray(gripper, float), opening_q)
        mujoco.mj_forward(scene.model, scene.data)
    return scene.state()


def reached(skill: str, text: str, state: np.ndarray) -> dict[str, bool]:
    ins = BY_TEXT[text]
    return {s.name: s.reached(state, ins) for s in SKILLS_BY_NAME[skill].stages}


def knob(scene: Scene, drawer: str) -> np.ndarray:
    return scene.data.geom_xpos[scene.knob_geom[["top", "middle", "bottom"].index(drawer)]].copy()


def test_stage_names_end_with_the_goal():
    assert SKILLS_BY_NAME["drawer_open"].stage_names == ("reached_handle", "grasped_handle", "pulled_half", "open")
    assert SKILLS_BY_NAME["drawer_close"].stage_names == ("reached_front", "pushed_half", "closed")
    assert SKILLS_BY_NAME["pick_place"].stage_names == ("reached_object", "grasped", "lifted", "over_target", "placed")
    assert SKILLS_BY_NAME["move_near"].stage_names == ("reached_object", "grasped", "lifted", "near_target", "placed")


def test_drawer_open_stages(scene):
    text = "open the top drawer"
    state_with(scene, drawers={"top": 0.0})
    k = knob(scene, "top")
    far = reached("drawer_open", text, state_with(scene, k + [0.0, -0.05, 0.0]))
    assert far == {"reached_handle": False, "grasped_handle": False, "pulled_half": False}
    at_open = reached("drawer_open", text, state_with(scene, k + [0.0, -0.02, 0.0]))
    assert at_open == {"reached_handle": True, "grasped_handle": False, "pulled_half": False}
    closed = reached("drawer_open", text, state_with(scene, k, FINGER_TRAVEL))
    assert closed == {"reached_handle": True, "grasped_handle": True, "pulled_half": False}
    # The middle drawer's knob is not the top one's.
    assert not reached("drawer_open", "open the middle drawer", state_with(scene, k, FINGER_TRAVEL))["reached_handle"]
    for q, half in [(0.07, False), (0.08, True)]:
        state_with(scene, drawers={"top": q})
        assert reached("drawer_open", text, state_with(scene, knob(scene, "top"), FINGER_TRAVEL))["pulled_half"] is half


def test_drawer_close_stages(scene):
    text = "close the middle drawer"
    state_with(scene, drawers={"middle": 0.15})
    k = knob(scene, "middle")
    assert reached("drawer_close", text, state_with(scene, k + [0.0, -0.06, 0.0], FINGER_TRAVEL))["reached_front"]
    assert not reached("drawer_close", text, state_with(scene, k + [0.0, -0.07, 0.0], FINGER_TRAVEL))["reached_front"]
    # the edge style's push point: on the front panel 16 cm beside the knob; past its edge, not
    assert reached("drawer_close", text, state_with(scene, k + [0.161, 0.008, 0.0], FINGER_TRAVEL))["reached_front"]
    assert not reached("drawer_close", text, state_with(scene, k + [0.20, 0.008, 0.0], FINGER_TRAVEL))["reached_front"]
    assert not reached("drawer_close", text, state_with(scene, k + [0.0, 0.03, 0.0], FINGER_TRAVEL))["reached_front"]
    for q, half in [(0.065, False), (0.055, True)]:
        assert reached("drawer_close", text, state_with(scene, drawers={"middle": q}))["pushed_half"] is half


def test_pick_place_out_stages(scene):
    text = "pick the red can from the top drawer and place it on the counter"
    state_with(scene, drawers={"top": 0.2})
    scene.place_in_drawer("red can", "top", np.array([0.0, 0.1]))
    state_with(scene)
    can = scene.object_pos("red can")
    assert reached("pick_place", text, state_with(scene, can + [0.0, 0.0, 0.1])) == {
        "reached_object": False, "grasped": False, "lifted": False, "over_target": False}
    assert reached("pick_place", text, state_with(scene, can - [0.0, 0.0, 0.012])) == {
        "reached_object": True, "grasped": False, "lifted": False, "over_target": False}  # fingers open
    held = reached("pick_place", text, state_with(scene, can - [0.0, 0.0, 0.012], HOLD_Q))
    assert held == {"reached_object": True, "grasped": True, "lifted": False, "over_target": False}
    up = can + [0.0, 0.0, 0.1]
    assert reached("pick_place", text, state_with(scene, up - [0.0, 0.0, 0.012], HOLD_Q, objects={"red can": up}))[
        "lifted"]
    # Carried out in front of the open drawer, above the counter: over the target.
    out = np.array([0.0, -0.3, 0.4])
    stages = reached("pick_place", text, state_with(scene, out - [0.0, 0.0, 0.012], HOLD_Q, objects={"red can": out}))
    assert stages["lifted"] and stages["over_target"]
    # The same pose with open fingers is not holding, so neither.
    stages = reached("pick_place", text, state_with(scene, out - [0.0, 0.0, 0.012], 0.0, objects={"red can": out}))
    assert not stages["grasped"] and not stages["over_target"]


def test_pick_place_in_and_move_near_targets(scene):
    state_with(scene, drawers={"middle": 0.2})
    above_drawer = scene.drawer_frame_origin("middle") + [0.0, 0.12, 0.15]
    text_in = "place the red can into the middle drawer"
    assert reached("pick_place", text_in, state_with(scene, above_drawer - [0, 0, 0.012], HOLD_Q,
                                                     objects={"red can": above_drawer}))["over_target"]
    assert not reached("pick_place", "place the red can into the top drawer", scene.state())["over_target"]
    scene.place_on_counter("orange", np.array([0.3, -0.3]))
    for dx, near in [(0.1, True), (0.14, False)]:
        can = np.array([0.3 - dx, -0.3, 0.1])
        stages = reached("move_near", "move the red can near the orange",
                         state_with(scene, can - [0, 0, 0.012], HOLD_Q, objects={"red can": can}))
        assert stages["lifted"] and stages["near_target"] is near, dx
    # Lifted means above the counter by LIFT: an object held at rest height is not lifted.
    low = np.array([0.0, -0.3, REST_HEIGHT["red can"] + 0.01])
    assert not reached("move_near", "move the red can near the orange",
                       state_with(scene, low - [0, 0, 0.012], HOLD_Q, objects={"red can": low}))["lifted"]


def test_progress_counts_stages_only_in_order(scene):
    ins = BY_TEXT["open the top drawer"]
    progress = StageProgress(SKILLS_BY_NAME["drawer_open"], ins)
    assert progress.furthest == NO_STAGE
    # Drawer pulled half open but the gripper nowhere near: no stage, since the first is missing.
    state_with(scene, drawers={"top": 0.1})
    assert progress.update(state_with(scene, [0.3, -0.3, 0.4])) == 0
    # At the handle with closed fingers: the first two pass in one step, then the third.
    assert progress.update(state_with(scene, knob(scene, "top"), FINGER_TRAVEL)) == 3
    assert progress.furthest == "pulled_half"
    # Moving away later does not undo a passed stage; success passes the goal.
    assert progress.update(state_with(scene, [0.3, -0.3, 0.4])) == 3
    assert progress.update(scene.state(), success=True) == 4 and progress.furthest == "open"
    fresh = StageProgress(SKILLS_BY_NAME["drawer_open"], ins)
    assert fresh.update(scene.state(), success=True) == 4  # success counts every stage


def passes_in_order(task: str, kind: str, seeds: range) -> list[str]:
    """Run the scripted policy; for every successful episode, check that every intermediate
    stage was passed in order from the states alone. Returns the failures found."""
    env = make_env(task)
    problems = []
    for ins in instructions_for(task):
        for seed in seeds:
            policy = make_policy(kind, env, np.random.default_rng(seed))
            obs, info = env.reset(seed=seed, options={"instruction": ins.text})
            policy.reset(obs, info)
            progress = StageProgress(SKILLS_BY_NAME[ins.skill], ins)
            progress.update(obs["state"])
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                progress.update(obs["state"])  # without the success flag: the states must show it
                done = terminated or truncated
            if info["success"] and progress.passed != len(progress.skill.stages):
                problems.append(f"{kind} {ins.text!r} seed {seed}: stopped at {progress.furthest}")
    return problems


@pytest.mark.parametrize("kind", ["expert", "demo"])
def test_scripted_episodes_pass_every_stage_in_order(kind):
    assert passes_in_order("all", kind, range(1)) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["expert", "demo"])
def test_scripted_episodes_pass_every_stage_in_order_many_seeds(kind):
    assert passes_in_order("all", kind, range(1, 11)) == []


def test_dataset_demos_pass_every_stage_in_order(small_datasets, monkeypatch):
    from qtbench.data.store import dataset_id, read_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    episodes = read_dataset(dataset_id("drawer_open", "demos", "small")).episodes
    assert episodes
    kicked = []
    for ep in episodes:
        ins = BY_TEXT[ep.instruction]
        progress = StageProgress(SKILLS_BY_NAME[ins.skill], ins)
        for state in ep.states:
            progress.update(state)
        if progress.passed != len(progress.skill.stages):
            assert drawer_outran_the_hand(ep.states, ins.drawer), (ins.text, progress.furthest)
            kicked.append(ins.text)
    assert len(kicked) <= 1, kicked  # known, rare: see drawer_outran_the_hand


def drawer_outran_the_hand(states, drawer: str) -> bool:
    """Whether the drawer, at rest, came out more than 1 cm farther than the hand in the next
    step: no pull does that (a coasting drawer is not at rest). A known glitch, not yet fixed
    (1 of 100 hook demos; most likely cause, not yet confirmed): a
    finger pressed into the 1 cm drawer front past its middle plane flips the contact normal and
    the solver kicks the drawer out, so a demo can open a drawer without ever being seated at a
    handle; such a demo passes no stage."""
    q = [float(layout.drawer_pos(s, drawer)) for s in states]
    y = [float(layout.gripper_pos(s)[1]) for s in states]
    for t in range(1, len(states) - 1):
        at_rest = abs(q[t] - q[t - 1]) < 0.005
        if at_rest and (q[t + 1] - q[t]) - max(y[t] - y[t + 1], 0.0) > 0.01:
            return True
    return False


def test_drawer_origin_from_the_state_matches_the_scene(scene):
    from qtbench.envs.pick_place import drawer_origin

    for drawer, q in (("top", 0.05), ("middle", 0.2), ("bottom", 0.13)):
        state = state_with(scene, drawers={drawer: q})
        assert drawer_origin(state, drawer) == pytest.approx(scene.drawer_frame_origin(drawer), abs=1e-6)
