"""Scripted policies: the noiseless expert, the human-like demonstrator and the erring
autonomous collector. All three run the same per-skill plans (experts.py) and differ only in
the noise model, drawn per episode and per step from the generator passed to make_policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from qtbench.envs.experts import PLANS, Perturb, Plan
from qtbench.envs.instructions import BY_TEXT

POLICY_KINDS = ("expert", "demo", "autonomous")


@dataclass(frozen=True)
class NoiseModel:
    """How far a policy strays from the ideal plan."""

    speed: tuple[float, float] = (1.0, 1.0)  # per-episode fraction of the maximum speed
    waypoint_offset: float = 0.0  # std (m) of per-episode grasp / place point offsets
    action_noise: float = 0.0  # std of Gaussian noise on the motion part of each action
    pause_prob: float = 0.0  # chance per step of starting a pause (zero motion)
    pause_steps: tuple[int, int] = (1, 3)
    drift: float = 0.0  # std (m) per step of a random walk added to the motion
    close_early_prob: float = 0.0  # chance per episode to close the gripper too early
    early_release_prob: float = 0.0  # chance per episode to drop the object during transport
    pull_short: float = 0.0  # max m of drawer travel left undone (uniform)
    retries: int = 2  # regrasp attempts after a lost grasp (the collector never notices)


NOISE_MODELS: dict[str, NoiseModel] = {
    "expert": NoiseModel(),
    "demo": NoiseModel(
        speed=(0.75, 1.0), waypoint_offset=0.003, action_noise=0.05, pause_prob=0.04, pause_steps=(1, 3)
    ),
    "autonomous": NoiseModel(
        speed=(0.6, 1.0), waypoint_offset=0.012, action_noise=0.15, pause_prob=0.08, pause_steps=(1, 5),
        drift=0.001, close_early_prob=0.3, early_release_prob=0.3, pull_short=0.18, retries=0,
    ),
}


class ScriptedPolicy:
    """Dispatches on the episode's instruction at reset and follows that skill's plan."""

    def __init__(self, noise: NoiseModel, max_displacement: float, rng: np.random.Generator):
        self.noise = noise
        self.max_displacement = max_displacement
        self.rng = rng
        self.plan: Plan | None = None

    def reset(self, obs: dict, info: dict) -> None:
        ins = BY_TEXT[info["instruction"]]
        n, rng = self.noise, self.rng
        perturb = Perturb(
            grasp_offset=np.append(rng.normal(0.0, n.waypoint_offset, 2), 0.0),
            place_offset=np.append(rng.normal(0.0, n.waypoint_offset, 2), 0.0),
            close_early=int(rng.integers(1, 3)) if rng.random() < n.close_early_prob else 0,
            release_at=int(rng.integers(0, 6)) if rng.random() < n.early_release_prob else None,
            pull_short=float(rng.uniform(0.0, n.pull_short)),
            retries=n.retries,
        )
        self.plan = PLANS[ins.skill](ins, np.asarray(obs["state"], np.float64), perturb, self.max_displacement)
        self.speed = float(rng.uniform(*n.speed))
        self.pause_left = 0
        self.drift = np.zeros(3)

    def act(self, obs: dict) -> np.ndarray:
        if self.plan is None:
            raise RuntimeError("call reset(obs, info) before act(obs)")
        n, rng = self.noise, self.rng
        action = self.plan.act(np.asarray(obs["state"], np.float64), self.speed)
        if self.pause_left == 0 and n.pause_prob and rng.random() < n.pause_prob:
            self.pause_left = int(rng.integers(n.pause_steps[0], n.pause_steps[1] + 1))
        if self.pause_left:
            self.pause_left -= 1
            action[:3] = 0.0
        if n.drift:
            self.drift += rng.normal(0.0, n.drift, 3) / self.max_displacement
            action[:3] += self.drift
        if n.action_noise:
            action[:3] += rng.normal(0.0, n.action_noise, 3)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_policy(kind: str, env: gym.Env, rng: np.random.Generator) -> ScriptedPolicy:
    """A scripted policy for ``env`` (any qtbench task); kind in POLICY_KINDS."""
    if kind not in POLICY_KINDS:
        from qtbench.errors import unknown_name

        raise unknown_name("policy kind", kind, POLICY_KINDS)
    return ScriptedPolicy(NOISE_MODELS[kind], float(env.unwrapped.max_displacement), rng)


def play_episode(env: gym.Env, policy: ScriptedPolicy, seed: int, options: dict | None = None) -> tuple[dict, int]:
    """Run one episode of a scripted policy; returns the final info and the number of steps."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(obs, info)
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        steps += 1
    return info, steps
