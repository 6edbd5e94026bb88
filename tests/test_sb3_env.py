"""Stable-Baselines3 interop: the flattened env passes SB3's checker and SAC runs on it."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from qtbench.envs import layout
from qtbench.envs.instructions import MAX_TOKENS
from qtbench.envs.sb3 import make_sb3_env
from qtbench.errors import QtbenchError


@pytest.mark.parametrize("task, encoding, extra", [("all", "onehot", 66), ("drawer_open", "onehot", 3),
                                                   ("pick_place", "tokens", MAX_TOKENS)])
def test_sb3_check_env(task, encoding, extra):
    env = make_sb3_env(task, encoding=encoding)
    check_env(env)
    assert env.observation_space.shape == (layout.STATE_DIM + extra,)


def test_onehot_marks_the_episode_instruction():
    env = make_sb3_env("drawer_close")
    obs, info = env.reset(seed=0, options={"instruction": "close the middle drawer"})
    onehot = obs[layout.STATE_DIM:]
    assert onehot.sum() == 1.0 and env.texts[int(np.argmax(onehot))] == "close the middle drawer"


def test_unknown_encoding():
    with pytest.raises(QtbenchError, match="onehot"):
        make_sb3_env("all", encoding="bert")


def test_sac_runs_a_few_hundred_steps():
    import torch
    from stable_baselines3 import SAC

    torch.manual_seed(0)
    env = make_sb3_env("drawer_open")
    model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, buffer_size=1000,
                policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    model.learn(total_timesteps=200)
    assert model.num_timesteps == 200
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
