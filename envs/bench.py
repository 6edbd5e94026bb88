"""Env throughput per skill on one core, for benchmarks.md (the `qtbench bench env` command
is :mod:`qtbench.cli.bench`).

Reports env steps per wall second and simulated seconds per wall second (state
observations), for uniformly random actions and for the scripted expert. With
``--compare-metaworld`` (only if `metaworld` is importable) it measures Meta-World's
single-env drawer-open-v3 the same way, side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


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


# Timed in a child interpreter so Meta-World may live in its own venv (it pins an older MuJoCo).
METAWORLD_SNIPPET = """
import json, sys, time
import gymnasium as gym
import metaworld, mujoco
steps, seed = int(sys.argv[1]), int(sys.argv[2])
env = gym.make("Meta-World/MT1", env_name="drawer-open-v3", seed=seed)
env.action_space.seed(seed)
env.reset(seed=seed)
start = time.process_time()
for _ in range(steps):
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    if terminated or truncated:
        env.reset()
seconds = time.process_time() - start
print(json.dumps({"seconds": seconds, "dt": env.unwrapped.dt, "mujoco": mujoco.__version__}))
"""


def measure_metaworld(steps: int, seed: int, python: str) -> tuple[Throughput, str]:
    """Meta-World's drawer-open-v3 (MT1, one env, random actions), timed by ``python``."""
    import json
    import subprocess

    from qtbench.errors import QtbenchError

    fix = "pip install metaworld into a separate venv and pass --metaworld-python /path/to/venv/bin/python"
    try:
        proc = subprocess.run([python, "-W", "ignore", "-c", METAWORLD_SNIPPET, str(steps), str(seed)],
                              capture_output=True, text=True)
    except OSError as err:
        raise QtbenchError(f"could not start {python}: {err}", fix) from err
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QtbenchError(f"could not run Meta-World with {python}: {last}", fix)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result = Throughput("metaworld drawer-open-v3", "random", steps, out["seconds"], out["dt"])
    return result, out["mujoco"]


def env_section(steps: int, seed: int, metaworld_python: str | None = None) -> tuple[str, str]:
    """Time every skill with random and expert actions (and Meta-World's drawer-open-v3 with
    ``metaworld_python``, when given); returns the results table and the benchmarks.md section."""
    import mujoco
    from tqdm import tqdm

    from qtbench.benchmarks_md import machine_description, markdown_table
    from qtbench.envs.instructions import SKILLS
    from qtbench.errors import QtbenchError

    if steps < 1:
        raise QtbenchError(f"--steps must be at least 1, got {steps}")
    metaworld: list[Throughput] = []
    metaworld_note = ""
    if metaworld_python is not None:  # first, so a missing Meta-World fails fast
        result, mw_mujoco = measure_metaworld(steps, seed, metaworld_python)
        metaworld.append(result)
        metaworld_note = f" Meta-World ran in `{metaworld_python}` with MuJoCo {mw_mujoco}."
    jobs = [(skill, actions) for skill in SKILLS for actions in ("random", "expert")]
    ours = [measure_qtbench(s, a, steps, seed) for s, a in tqdm(jobs, desc="bench env", unit="run")]
    results = ours + metaworld
    rows = [[r.name, r.actions, f"{r.steps_per_s:,.0f}", f"{r.sim_per_s:,.1f}", f"{r.sim_dt:g}"] for r in results]
    table = markdown_table(["env", "actions", "env steps/s", "simulated s / wall s", "control dt (s)"], rows)
    body = (
        "## Environment throughput (`qtbench bench env`)\n\n"
        f"One process on one core, state observations, {steps} env steps per row "
        f"(episodes reset with seeds {seed}, {seed}+1, ...; random actions from seed {seed}). "
        f"Timed with process CPU time (other load on the machine does not count). "
        f"qtbench: MuJoCo {mujoco.__version__}.{metaworld_note} Machine: {machine_description()}.\n\n"
        f"{table}\n"
    )
    if metaworld:
        slowest = min(ours, key=lambda r: r.sim_per_s)
        body += (f"\nSlowest qtbench row ({slowest.name}, {slowest.actions} actions) vs Meta-World "
                 f"drawer-open-v3: {slowest.sim_per_s / metaworld[0].sim_per_s:.2f}x simulated seconds "
                 "per wall second.\n")
    return table, body
