"""The environment suite: registration, spaces, determinism, bad input, save/restore."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import qtbench
from qtbench.envs import TASKS, layout, make_env
from qtbench.envs.instructions import BY_TEXT, INSTRUCTIONS, SKILLS, TEXT_CHARSET, instructions_for
from qtbench.errors import QtbenchError


def test_package_version_and_registration():
    assert qtbench.__version__ == "0.1.0"
    assert set(TASKS) == {"drawer_open", "drawer_close", "pick_place", "move_near", "all"}
    for env_id in TASKS.values():
        assert env_id in gym.registry


def test_gym_make_with_the_module_prefix_needs_no_import():
    """The one documented way without `import qtbench`: Gymnasium 1.x loads no plugin entry
    points, but imports the module named before ":" (qtbench registers its ids on import)."""
    import subprocess
    import sys

    code = ("import sys, gymnasium as gym; assert 'qtbench' not in sys.modules; "
            "env = gym.make('qtbench:qtbench/DrawerOpen-v2'); env.reset(seed=0); print(env.unwrapped.task)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "drawer_open"


@pytest.mark.parametrize("env_id", list(TASKS.values()))
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id, render_mode="rgb_array", render_size=(48, 64))
    check_env(env.unwrapped)
    env.close()


def test_unknown_task_lists_choices():
    with pytest.raises(QtbenchError, match="drawer_open") as err:
        make_env("open_fridge")
    assert "open_fridge" in str(err.value)


def test_spaces_and_info():
    env = make_env("all")
    obs, info = env.reset(seed=3)
    assert obs["state"].shape == (layout.STATE_DIM,) == (49,)
    assert obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert set(obs["instruction"]) <= TEXT_CHARSET
    assert env.action_space.shape == (4,)
    assert set(info) >= {"success", "instruction", "skill"}
    assert info["success"] is False
    assert env.unwrapped.max_episode_steps == 60  # pick_place's horizon is the longest
    assert make_env("drawer_open").unwrapped.max_episode_steps == 40


def test_layout_fields_tile_the_state():
    starts = sorted((f.start, f.size) for f in layout.FIELDS.values())
    pos = 0
    for start, size in starts:
        assert start == pos
        pos += size
    assert pos == layout.STATE_DIM
    batch = np.arange(2 * layout.STATE_DIM, dtype=np.float32).reshape(2, -1)
    assert layout.object_pos(batch, "red can").shape == (2, 3)
    assert layout.object_pos(batch, "red can")[0].tolist() == [16.0, 17.0, 18.0]
    assert layout.handle_pos(batch, "middle")[1].tolist() == [59.0, 60.0, 61.0]  # 49 + 10
    assert layout.named_pos(batch, "drawer")[0].tolist() == [46.0, 47.0, 48.0]


def test_named_pos_holds_what_the_instruction_names():
    for task, roles in (("move_near", ("obj", "target")), ("pick_place", ("obj", "drawer")),
                        ("drawer_open", ("drawer",))):
        env = make_env(task)
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            s, ins = obs["state"], BY_TEXT[info["instruction"]]
            named = {"obj": ins.obj, "target": ins.target, "drawer": ins.drawer}
            for role in layout.NAMED:
                expected = (np.zeros(3) if role not in roles else layout.handle_pos(s, named[role])
                            if role == "drawer" else layout.object_pos(s, named[role]))
                assert layout.named_pos(s, role).tolist() == expected.tolist(), (task, seed, role)
            obs, *_ = env.step(np.float32([0.5, 0, 0, 0]))  # it follows them as they move
            assert np.array_equal(layout.named_pos(obs["state"], roles[0]),
                                  layout.handle_pos(obs["state"], ins.drawer) if roles[0] == "drawer"
                                  else layout.object_pos(obs["state"], ins.obj))


def test_initial_state_is_consistent_with_the_scene():
    env = make_env("drawer_close")
    obs, info = env.reset(seed=5)
    s = obs["state"]
    ins = info["instruction"].split()[2]  # "close the <drawer> drawer"
    assert layout.drawer_pos(s, ins) >= 0.12
    assert layout.finger_opening(s) == pytest.approx(0.098, abs=1e-6)
    for drawer in ("top", "middle", "bottom"):
        if drawer != ins:
            assert layout.drawer_pos(s, drawer) <= 0.01
    # Every object rests on the counter, away from each other.
    xy = layout.get(s, "object_pos")[:, :2]
    dists = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy))
    assert dists.min() >= 0.1 - 1e-6


def test_same_seed_same_episode_and_different_seeds_differ():
    env_a, env_b = make_env("all"), make_env("all")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (15, 4)).astype(np.float32)
    obs_a, info_a = env_a.reset(seed=11)
    obs_b, info_b = env_b.reset(seed=11)
    assert info_a["instruction"] == info_b["instruction"]
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    for a in actions:
        np.testing.assert_array_equal(env_a.step(a)[0]["state"], env_b.step(a)[0]["state"])
    starts = {env_a.reset(seed=s)[0]["state"].tobytes() for s in range(5)}
    assert len(starts) == 5


def test_pinned_instruction_and_unknown_instruction():
    env = make_env("all")
    for ins in (INSTRUCTIONS[0], INSTRUCTIONS[-1]):
        _, info = env.reset(seed=0, options={"instruction": ins.text})
        assert info["instruction"] == ins.text and info["skill"] == ins.skill
    with pytest.raises(QtbenchError, match="open the top drawer"):
        make_env("drawer_open").reset(options={"instruction": "open the fridge"})
    with pytest.raises(QtbenchError):  # a real instruction, but of another skill
        make_env("drawer_open").reset(options={"instruction": "close the top drawer"})


def test_all_tasks_samples_every_skill():
    env = make_env("all")
    skills = {env.reset(seed=s)[1]["skill"] for s in range(40)}
    assert skills == set(SKILLS)
    assert len(instructions_for("all")) == 66


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((1, 4)), np.zeros(5)])
def test_wrong_action_shape_raises(bad):
    env = make_env("drawer_open")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.unwrapped.step(bad)


def test_nan_action_never_reaches_the_simulator():
    env = make_env("drawer_open").unwrapped
    env.reset(seed=0)
    before = env.get_physics_state()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.inf, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(env.get_physics_state(), before)
    assert env.steps == 0


def test_actions_are_clipped_and_displacement_bounded():
    env = make_env("drawer_open").unwrapped
    obs, _ = env.reset(seed=0)
    start = layout.gripper_pos(obs["state"]).copy()
    obs, *_ = env.step(np.array([100.0, 0.0, 0.0, -1.0]))
    moved = layout.gripper_pos(obs["state"]) - start
    assert moved[0] == pytest.approx(env.max_displacement, abs=0.006)
    assert abs(moved[1]) < 0.003 and abs(moved[2]) < 0.003


def test_truncation_at_the_skill_horizon():
    env = make_env("drawer_open", horizons={"drawer_open": 5})
    env.reset(seed=0)
    for t in range(5):
        _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert reward == 0.0 and not terminated
        assert truncated == (t == 4)


@pytest.mark.parametrize("sleep", [False, True])
def test_physics_state_save_and_restore(sleep):
    env = make_env("pick_place", sleep=sleep).unwrapped
    other = make_env("pick_place", sleep=sleep).unwrapped
    env.reset(seed=2)
    other.reset(seed=9, options={"instruction": env.instruction.text})  # the same named objects
    rng = np.random.default_rng(1)
    for a in rng.uniform(-1, 1, (20, 4)):
        env.step(a)
    saved = env.get_physics_state()
    actions = rng.uniform(-1, 1, (8, 4))
    first = np.array([env.step(a)[0]["state"] for a in actions])
    env.set_physics_state(saved)
    other.set_physics_state(saved)
    again = np.array([env.step(a)[0]["state"] for a in actions])
    elsewhere = np.array([other.step(a)[0]["state"] for a in actions])
    if sleep:
        np.testing.assert_allclose(again, first, atol=1e-4)
        np.testing.assert_allclose(elsewhere, first, atol=1e-4)
    else:
        np.testing.assert_array_equal(again, first)
        np.testing.assert_array_equal(elsewhere, first)
    with pytest.raises(ValueError, match="physics state"):
        env.set_physics_state(saved[:-1])


def test_pixel_observations_and_render():
    env = make_env("drawer_open", obs_mode="pixels", image_size=(32, 40), render_mode="rgb_array",
                   render_size=(24, 30))
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 40, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 5  # a real picture, not a blank frame
    assert env.render().shape == (24, 30, 3)
    env.close()


def test_bad_constructor_arguments():
    with pytest.raises(QtbenchError, match="pixels"):
        make_env("drawer_open", obs_mode="video")
    with pytest.raises(QtbenchError, match="corner"):
        make_env("drawer_open", camera="ceiling")
    with pytest.raises(QtbenchError, match="move_near"):
        make_env("drawer_open", horizons={"drawer_opne": 10})


def test_diverged_simulation_ends_the_episode_as_a_truncation():
    env = make_env("drawer_open")
    env.reset(seed=0)
    sim = env.unwrapped
    sim.data.qfrc_applied[:] = 1e16  # drives the accelerations past MuJoCo's divergence check
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["physics_unstable"] and not info["success"]
    assert np.isfinite(obs["state"]).all()


def test_env_docstring_observation_table_is_the_layout():
    import inspect

    from qtbench.envs.base import ManipulationEnv

    doc = inspect.cleandoc(ManipulationEnv.__doc__)
    assert layout.observation_table() in doc
    for section in ("## Description", "## Action Space", "## Observation Space", "## Rewards",
                    "## Starting State", "## Episode End", "## Arguments", "## Version History"):
        assert section in doc
    for env_id in TASKS.values():
        assert env_id in doc
    # every constructor argument is in the arguments table
    for name in inspect.signature(ManipulationEnv.__init__).parameters:
        assert name == "self" or f"| {name} |" in doc


def test_state_bounds_are_finite_and_no_checker_warns(recwarn):
    import warnings

    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from qtbench.envs.sb3 import make_sb3_env

    warnings.simplefilter("always")
    env = make_env("drawer_open")
    box = env.observation_space["state"]
    assert np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high)) and np.all(box.low < box.high)
    assert np.all(layout.get(box.low, "drawer_pos") < 0) and np.all(layout.get(box.high, "drawer_pos") > 0.2)
    check_env(env.unwrapped)
    sb3_check_env(make_sb3_env("drawer_open"))
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize("kind", ["expert", "random"])
def test_observations_stay_inside_the_state_bounds(kind):
    from qtbench.envs.policies import make_policy

    env = make_env("all")
    box = env.observation_space["state"]
    env.action_space.seed(0)
    rng = np.random.default_rng(0)
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        policy = make_policy(kind, env, rng) if kind != "random" else None
        if policy:
            policy.reset(obs, info)
        done = False
        while not done:
            assert box.contains(obs["state"]), (seed, np.flatnonzero((obs["state"] < box.low) | (obs["state"] > box.high)))
            obs, _, terminated, truncated, info = env.step(policy.act(obs) if policy else env.action_space.sample())
            done = terminated or truncated
        assert box.contains(obs["state"])
