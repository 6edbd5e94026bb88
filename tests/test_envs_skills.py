"""Success predicates on hand-set physical states, and the initial-state samplers."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from qtbench.envs import drawer_close, drawer_open, make_env, move_near, pick_place
from qtbench.envs.instructions import BY_TEXT
from qtbench.envs.scene import GROOVE_DEPTH, LEDGE_TOP, LIP_TOP, PULL_HALF_LENGTH, PULL_OFFSET, PULL_X, Scene


@pytest.fixture()
def scene():
    env = make_env("all").unwrapped
    env.reset(seed=0, options={"instruction": "move the red can near the orange"})
    return env.scene


def settle(scene: Scene, seconds: float = 0.3) -> None:
    mujoco.mj_step(scene.model, scene.data, nstep=int(seconds / scene.model.opt.timestep))


def test_drawer_open_and_close_thresholds(scene):
    open_top = BY_TEXT["open the top drawer"]
    close_top = BY_TEXT["close the top drawer"]
    for q, opened, closed in [(0.0, False, True), (0.02, False, True), (0.1, False, False),
                              (0.16, True, False), (0.2, True, False)]:
        scene.set_drawer("top", q)
        mujoco.mj_forward(scene.model, scene.data)
        assert drawer_open.success(scene, open_top) is opened, q
        assert drawer_close.success(scene, close_top) is closed, q


def test_pick_place_in_needs_the_object_resting_inside_that_drawer(scene):
    ins = BY_TEXT["place the red can into the middle drawer"]
    scene.set_drawer("middle", 0.2)
    mujoco.mj_forward(scene.model, scene.data)
    scene.place_in_drawer("red can", "middle", np.array([0.0, 0.12]))
    settle(scene)
    assert scene.in_drawer("red can", "middle")
    assert pick_place.success(scene, ins)
    assert not pick_place.success(scene, BY_TEXT["place the red can into the top drawer"])
    assert not pick_place.success(scene, BY_TEXT["pick the red can from the middle drawer and place it on the counter"])
    # The same can on the counter is not in the drawer.
    scene.place_on_counter("red can", np.array([-0.35, -0.3]))
    settle(scene)
    assert not pick_place.success(scene, ins)
    assert pick_place.success(scene, BY_TEXT["pick the red can from the middle drawer and place it on the counter"])


def test_object_held_in_the_air_is_not_on_the_counter(scene):
    out = BY_TEXT["pick the red can from the top drawer and place it on the counter"]
    scene.set_object("red can", np.array([-0.35, -0.3, 0.2]))
    mujoco.mj_forward(scene.model, scene.data)
    assert not pick_place.success(scene, out)


def test_move_near_distance_threshold(scene):
    ins = BY_TEXT["move the red can near the orange"]
    scene.place_on_counter("orange", np.array([0.3, -0.3]))
    for dx, near in [(0.08, True), (0.115, True), (0.14, False), (0.3, False)]:
        scene.place_on_counter("red can", np.array([0.3 - dx, -0.3]))
        mujoco.mj_forward(scene.model, scene.data)
        assert move_near.success(scene, ins) is near, dx
    # Moving fast (still travelling) is not resting.
    scene.place_on_counter("red can", np.array([0.22, -0.3]))
    mujoco.mj_forward(scene.model, scene.data)
    adr = scene.object_qvel[0]
    scene.data.qvel[adr] = 0.5
    assert not move_near.success(scene, ins)


@pytest.mark.parametrize("task", ["drawer_open", "drawer_close", "pick_place", "move_near"])
def test_no_episode_starts_solved(task):
    env = make_env(task)
    for seed in range(15):
        env.reset(seed=seed)
        _, reward, terminated, _, info = env.step(np.zeros(4, np.float32))
        assert not terminated and reward == 0.0, info["instruction"]


def test_pick_place_samplers():
    env = make_env("pick_place").unwrapped
    for text in ("pick the green apple from the bottom drawer and place it on the counter",
                 "place the green apple into the bottom drawer"):
        env.reset(seed=4, options={"instruction": text})
        assert env.scene.drawer_q("bottom") >= 0.18
        assert env.scene.drawer_q("top") <= 0.01 and env.scene.drawer_q("middle") <= 0.01
        assert env.scene.in_drawer("green apple", "bottom") == text.startswith("pick")


def test_move_near_sampler_keeps_the_pair_apart():
    env = make_env("move_near").unwrapped
    for seed in range(20):
        _, info = env.reset(seed=seed)
        ins = BY_TEXT[info["instruction"]]
        assert move_near.distance(env.scene, ins) >= move_near.START_DISTANCE


def test_finger_pull_constants_mirror_the_scene(scene):
    """scene.PULL_OFFSET, GROOVE_DEPTH, LEDGE_TOP and LIP_TOP are where assets/scene.xml puts
    the ledge and lip (read from the compiled model, in each drawer's body frame)."""
    m = scene.model
    for drawer in ("top", "middle", "bottom"):
        knob, ledge, lip = (mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{part}_{drawer}")
                            for part in ("knob", "ledge", "lip"))
        assert m.geom_pos[ledge, 0] == pytest.approx(PULL_X) and m.geom_pos[lip, 0] == pytest.approx(PULL_X)
        assert m.geom_size[ledge, 0] == pytest.approx(PULL_HALF_LENGTH) == m.geom_size[lip, 0]
        assert m.geom_pos[ledge, 2] + m.geom_size[ledge, 2] == pytest.approx(LEDGE_TOP)
        assert m.geom_pos[lip, 2] + m.geom_size[lip, 2] == pytest.approx(LIP_TOP)
        face = m.geom_pos[knob, 1] + m.geom_size[knob, 1]  # the knob's back rests on the front's face
        assert face - (m.geom_pos[lip, 1] + m.geom_size[lip, 1]) == pytest.approx(GROOVE_DEPTH)
        groove_middle = np.array([PULL_X, face - 0.5 * GROOVE_DEPTH, LEDGE_TOP])
        assert groove_middle - m.geom_pos[knob] == pytest.approx(PULL_OFFSET)
