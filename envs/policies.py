"""Scripted policies: the noiseless expert, the human-like demonstrator and the erring
autonomous collector. All three run the same per-skill plans (plans.py) and differ only in
the noise model, drawn per episode and per step from the generator passed to make_policy.

Every skill can be done in more than one style (plans.STYLES: a robust one and a fragile
one that needs more precision). Like people, the scripted policies have a habit: each episode
draws its style from the skill's STYLE_MIX with the policy's generator, unless a style is
pinned. The style is reported (``policy.style``) for the dataset, never put in observations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np

from qtbench.envs.plans import STYLES, Perturb, Plan
from qtbench.envs.instructions import BY_TEXT, instructions_for

POLICY_KINDS = ("expert", "demo", "autonomous")
# How often the demonstrators use each style (a habit, fixed per skill): the fragile style is
# as popular or more, as it is with people who have not been told which way works best.
STYLE_MIX: dict[str, dict[str, float]] = {
    "drawer_open": {"grasp": 0.3, "hook": 0.7},
    "drawer_close": {"knob": 0.4, "edge": 0.6},
    "pick_place": {"centre": 0.5, "end": 0.5},
    "move_near": {"centre": 0.4, "end": 0.6},
}
ROLES = ("robust", "fragile")  # aliases of each skill's first and second style


@dataclass(frozen=True)
class NoiseModel:
    """How far a policy strays from the ideal plan."""

    speed: tuple[float, float] = (1.0, 1.0)  # per-episode fraction of the maximum speed
    waypoint_offset: float = 0.0  # std (m) of per-episode grasp point offsets (x, y, z) and place point offsets (x, y)
    action_noise: float = 0.0  # std of Gaussian noise on the motion part of each action
    pause_prob: float = 0.0  # chance per step of starting a pause (zero motion)
    pause_steps: tuple[int, int] = (1, 3)
    drift: float = 0.0  # std (m) per step of a random walk added to the motion
    close_early_prob: float = 0.0  # chance per episode to close the gripper too early
    early_release_prob: float = 0.0  # chance per episode to drop the object during transport
    pull_short: float = 0.0  # max m of drawer travel left undone (uniform)
    retries: int = 2  # regrasp attempts after a lost grasp (the collector never notices)

    def scaled(self, k: float) -> "NoiseModel":
        """The same habits with ``k`` times the error in where the hand goes (waypoint offsets
        and drift): the imprecision that tells a robust style from a fragile one. Per-step
        action noise stays (the plans correct it as they go)."""
        return replace(self, waypoint_offset=k * self.waypoint_offset, drift=k * self.drift)


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


def check_styles(styles: str | tuple[str, ...] | None, task: str) -> None:
    """A QtbenchError unless every skill of ``task`` has exactly one of ``styles``."""
    for skill in dict.fromkeys(ins.skill for ins in instructions_for(task)):
        pick_style(skill, styles)


def pick_style(skill: str, styles: str | tuple[str, ...] | None) -> str | None:
    """The one of ``styles`` (names or roles) that ``skill`` has; None for the habit's mix."""
    if styles is None:
        return None
    styles = (styles,) if isinstance(styles, str) else tuple(styles)
    mine = [s for s in styles if s in ROLES or s in STYLES[skill]]
    if len(mine) != 1:
        from qtbench.errors import QtbenchError

        every = ", ".join(f"{k}: {'/'.join(v)}" for k, v in STYLES.items())
        raise QtbenchError(f"styles {','.join(styles)} name {len(mine)} styles of {skill}, not one",
                           f"name one style per skill ({every}), or robust / fragile")
    return list(STYLES[skill])[ROLES.index(mine[0])] if mine[0] in ROLES else mine[0]


class ScriptedPolicy:
    """Dispatches on the episode's instruction at reset and follows that skill's plan, in the
    pinned style of ``styles`` (names or roles, one per skill) or one drawn from STYLE_MIX."""

    def __init__(self, noise: NoiseModel, max_displacement: float, rng: np.random.Generator,
                 styles: str | tuple[str, ...] | None = None):
        self.noise = noise
        self.max_displacement = max_displacement
        self.rng = rng
        self.styles = styles
        self.plan: Plan | None = None
        self.style: str | None = None  # the style of the current episode

    def reset(self, obs: dict, info: dict) -> None:
        ins = BY_TEXT[info["instruction"]]
        n, rng = self.noise, self.rng
        mix = STYLE_MIX[ins.skill]
        self.style = pick_style(ins.skill, self.styles)
        if self.style is None:
            self.style = str(rng.choice(list(mix), p=list(mix.values())))
        perturb = Perturb(
            grasp_offset=rng.normal(0.0, n.waypoint_offset, 3),  # the hand errs in height too
            place_offset=np.append(rng.normal(0.0, n.waypoint_offset, 2), 0.0),
            close_early=int(rng.integers(1, 3)) if rng.random() < n.close_early_prob else 0,
            release_at=int(rng.integers(0, 6)) if rng.random() < n.early_release_prob else None,
            pull_short=float(rng.uniform(0.0, n.pull_short)),
            retries=n.retries,
        )
        self.plan = STYLES[ins.skill][self.style](ins, np.asarray(obs["state"], np.float64), perturb, self.max_displacement)
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


def make_policy(kind: str, env: gym.Env, rng: np.random.Generator, styles: str | tuple[str, ...] | None = None,
                noise_scale: float = 1.0) -> ScriptedPolicy:
    """A scripted policy for ``env`` (any qtbench task); kind in POLICY_KINDS. ``styles``
    pins one style per skill of the task (default: the habit's mix); ``noise_scale``
    multiplies the kind's waypoint error (NoiseModel.scaled)."""
    from qtbench.errors import QtbenchError, unknown_name

    if kind not in POLICY_KINDS:
        raise unknown_name("policy kind", kind, POLICY_KINDS)
    if not noise_scale >= 0:
        raise QtbenchError(f"noise scale must be 0 or more, got {noise_scale}", "pass e.g. --noise-scale 2")
    check_styles(styles, env.unwrapped.task)
    return ScriptedPolicy(NOISE_MODELS[kind].scaled(noise_scale), float(env.unwrapped.max_displacement), rng, styles)


def play_episode(env: gym.Env, policy: ScriptedPolicy, seed: int, options: dict | None = None,
                 states: list[np.ndarray] | None = None) -> tuple[dict, int]:
    """Run one episode of a scripted policy; returns the final info and the number of steps
    (the episode's style is ``policy.style``). ``states``, when given, receives every observed
    state, the reset state first."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(obs, info)
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated):
        if states is not None:
            states.append(obs["state"])
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        steps += 1
    if states is not None:
        states.append(obs["state"])
    return info, steps
