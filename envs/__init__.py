"""qtbench.envs: the language-conditioned MuJoCo manipulation suite (Gymnasium ids below).

This folder is ``envs/`` at the repository root, installed as the package ``qtbench.envs``
(``[tool.setuptools.package-dir]`` in pyproject.toml): import it as ``qtbench.envs``; there is
no ``qtbench/envs/`` folder and no top-level ``envs`` module. Without ``import qtbench``,
``gym.make("qtbench:qtbench/DrawerOpen-v2")`` imports it and registers the ids.
"""

from __future__ import annotations

import logging
import os
import sys

import gymnasium as gym

# Headless by default: MuJoCo picks its GL backend when it is first imported, so choose before
# that (a user's MUJOCO_GL, or a display, wins): EGL where its library exists, else OSMesa.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
    from ctypes.util import find_library

    os.environ["MUJOCO_GL"] = "egl" if find_library("EGL") or not find_library("OSMesa") else "osmesa"
# PyOpenGL (loaded by MuJoCo's EGL backend) logs an INFO line on import; keep the CLI quiet.
logging.getLogger("OpenGL").setLevel(logging.WARNING)

from qtbench.envs.instructions import MULTI_TASK  # noqa: E402 (after the GL backend is chosen)

TASKS: dict[str, str] = {
    "drawer_open": "qtbench/DrawerOpen-v2",
    "drawer_close": "qtbench/DrawerClose-v2",
    "pick_place": "qtbench/PickPlace-v2",
    "move_near": "qtbench/MoveNear-v2",
    MULTI_TASK: "qtbench/AllTasks-v2",
}
ENTRY_POINT = "qtbench.envs.base:ManipulationEnv"


def register_envs() -> None:
    """Register every task id with Gymnasium (idempotent; ``import qtbench`` calls it, and so
    does ``gym.make("qtbench:qtbench/DrawerOpen-v2")``, which imports qtbench first)."""
    for task, env_id in TASKS.items():
        if env_id not in gym.registry:
            # The env truncates itself at each skill's horizon, so no TimeLimit wrapper.
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"task": task})


def make_env(task: str, **kwargs) -> gym.Env:
    """``gym.make`` for a CLI task name (drawer_open, ..., all); kwargs go to ManipulationEnv."""
    if task not in TASKS:
        from qtbench.errors import unknown_name

        raise unknown_name("task", task, list(TASKS))
    register_envs()
    return gym.make(TASKS[task], **kwargs)
