"""`qtbench bench env`: env throughput per skill on one core, written to benchmarks.md.

Reports env steps per wall second and simulated seconds per wall second (state
observations), for uniformly random actions and for the scripted expert. With
``--compare-metaworld`` (only if `metaworld` is importable) it measures Meta-World's
single-env drawer-open-v3 the same way, side by side.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Throughput:
    name: str
    actions: str
    steps: int
    seconds: float  # process CPU seconds (one core; other load on the machine does not count)
    sim_dt: float  # simulated seconds per env step

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def sim_per_s(self) -> float:
        return self.steps * self.sim_dt / self.seconds


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("env", help="env steps/s and simulated s per wall s, per skill")
    p.add_argument("--steps", type=int, default=2000, help="env steps per (skill, action source)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks.md"))
    p.add_argument("--compare-metaworld", action="store_true",
                   help="also time Meta-World drawer-open-v3 (needs `pip install metaworld`)")
    p.set_defaults(func=cmd_bench_env)


def measure_qtbench(skill: str, actions: str, steps: int, seed: int) -> Throughput:
    """Run ``steps`` env steps of one skill with random or expert actions, timing the loop."""
    import numpy as np

    from qtbench.envs import make_env
    from qtbench.envs.policies import make_policy

    env = make_env(skill)
    rng = np.random.default_rng(seed)
    policy = make_policy("expert", env, rng) if actions == "expert" else None
    episode = 0
    obs, info = env.reset(seed=seed)
    if policy:
        policy.reset(obs, info)
    start = time.process_time()
    for _ in range(steps):
        action = policy.act(obs) if policy else rng.uniform(-1.0, 1.0, 4).astype(np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, info = env.reset(seed=seed + episode)
            if policy:
                policy.reset(obs, info)
    seconds = time.process_time() - start
    return Throughput(skill, actions, steps, seconds, env.unwrapped.dt)


def measure_metaworld(steps: int, seed: int) -> Throughput:
    """Meta-World's drawer-open-v3 (MT1, one env) with random actions."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World ids)

    env = gym.make("Meta-World/MT1", env_name="drawer-open-v3", seed=seed)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.process_time()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    seconds = time.process_time() - start
    return Throughput("metaworld drawer-open-v3", "random", steps, seconds, env.unwrapped.dt)


def cmd_bench_env(args: argparse.Namespace) -> int:
    import importlib.util

    import mujoco
    from tqdm import tqdm

    from qtbench.envs.instructions import SKILLS
    from qtbench.errors import QtbenchError
    from qtbench.report import machine_description, markdown_table, write_section

    if args.steps < 1:
        raise QtbenchError(f"--steps must be at least 1, got {args.steps}")
    jobs = [(skill, actions) for skill in SKILLS for actions in ("random", "expert")]
    results = [measure_qtbench(s, a, args.steps, args.seed) for s, a in tqdm(jobs, desc="bench env", unit="run")]
    if args.compare_metaworld:
        if importlib.util.find_spec("metaworld") is None:
            raise QtbenchError("metaworld is not importable here",
                               "pip install metaworld (ideally in a separate venv) and run from there")
        results.append(measure_metaworld(args.steps, args.seed))
    rows = [[r.name, r.actions, f"{r.steps_per_s:,.0f}", f"{r.sim_per_s:,.1f}", f"{r.sim_dt:g}"] for r in results]
    table = markdown_table(["env", "actions", "env steps/s", "simulated s / wall s", "control dt (s)"], rows)
    print(table)
    body = (
        "## Environment throughput (`qtbench bench env`)\n\n"
        f"One process on one core, state observations, {args.steps} env steps per row "
        f"(episodes reset with seeds {args.seed}, {args.seed}+1, ...; random actions from seed {args.seed}). "
        f"Timed with process CPU time. MuJoCo {mujoco.__version__}. Machine: {machine_description()}.\n\n"
        f"{table}\n"
    )
    meta = [r for r in results if r.name.startswith("metaworld")]
    if meta:
        ours = min(r.sim_per_s for r in results if r.actions == "random" and not r.name.startswith("metaworld"))
        body += f"\nSlowest qtbench skill vs Meta-World drawer-open-v3: {ours / meta[0].sim_per_s:.2f}x " \
                "simulated seconds per wall second.\n"
    write_section("env", body, args.out)
    logger.info("wrote the env section of %s", args.out)
    return 0
