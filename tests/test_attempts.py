"""The attempted-style instrument (envs/attempts.py): it names the style a scripted policy
pinned to one style executed, on every skill, and no style for an episode without contact."""

from __future__ import annotations

import numpy as np
import pytest

from qtbench.envs import make_env
from qtbench.envs.attempts import attempted_style
from qtbench.envs.plans import STYLES
from qtbench.envs.instructions import BY_TEXT
from qtbench.envs.policies import make_policy

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
