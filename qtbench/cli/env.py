"""`qtbench env ...`: list the tasks, render a frame, play a scripted policy."""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    env = subparsers.add_parser("env", help="the manipulation suite: list, render, play")
    sub = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="every task and its instructions")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("render", help="render a frame of a task's initial state to a PNG")
    p.add_argument("--task", default="all", help="task name (see `qtbench env list`)")
    p.add_argument("--instruction", help="pin this instruction (default: sampled from the seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--camera", default="front", help="front, corner or top")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("play", help="run a scripted policy and print its success rate per skill and style")
    p.add_argument("--task", default="all", help="task name (see `qtbench env list`)")
    p.add_argument("--policy", default="expert", help="expert, demo or autonomous")
    p.add_argument("--style", help="pin the style: robust, fragile, or style names (comma-separated, one per "
                   "skill, e.g. grasp or hook for drawer_open); default: each skill's habitual mix")
    p.add_argument("--noise-scale", type=float, default=1.0,
                   help="multiply the policy's per-episode waypoint error by this (precision sensitivity)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to play")
    p.add_argument("--seed", type=int, default=0, help="episode i uses env seed SEED+i")
    p.add_argument("--instruction", help="pin this instruction for every episode")
    p.set_defaults(func=cmd_play)


def cmd_list(args: argparse.Namespace) -> int:
    from qtbench.envs import TASKS, layout
    from qtbench.envs.base import SKILLS_BY_NAME
    from qtbench.envs.instructions import instructions_for

    for task, env_id in TASKS.items():
        instructions = instructions_for(task)
        horizon = max(SKILLS_BY_NAME[i.skill].horizon for i in instructions)
        print(f"{task:<13} {env_id:<24} {len(instructions):>2} instructions, horizon {horizon}")
        if task != "all":
            for ins in instructions:
                print(f"    {ins.text}")
    print(f"\nstate layout ({layout.STATE_DIM} floats; read fields through qtbench.envs.layout):")
    print("\n".join("    " + line for line in layout.describe().splitlines()))
    return 0


def _options(instruction: str | None) -> dict | None:
    return {"instruction": instruction} if instruction else None


def cmd_render(args: argparse.Namespace) -> int:
    from PIL import Image

    from qtbench.atomic import atomic_write
    from qtbench.envs import make_env

    env = make_env(args.task, render_mode="rgb_array", render_size=(args.height, args.width), camera=args.camera)
    _, info = env.reset(seed=args.seed, options=_options(args.instruction))
    frame = env.render()
    env.close()
    atomic_write(args.out, lambda tmp: Image.fromarray(frame).save(tmp, format="PNG", optimize=True))
    print(f"wrote {args.out} ({args.width}x{args.height}): {info['instruction']}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from qtbench.envs import make_env
    from qtbench.envs.attempts import how_it_ended, summarise_endings
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.envs.policies import make_policy, play_episode
    from qtbench.errors import QtbenchError
    from qtbench.funnel import ending_line

    from qtbench.results import wilson_interval

    if args.episodes < 1:
        raise QtbenchError(f"--episodes must be at least 1, got {args.episodes}")
    env = make_env(args.task)
    styles = tuple(s.strip() for s in args.style.split(",") if s.strip()) if args.style else None
    policy = make_policy(args.policy, env, np.random.default_rng(args.seed), styles, args.noise_scale)
    wins: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    lengths: list[int] = []
    endings: dict[str, list[str]] = defaultdict(list)  # skill -> how its failed episodes ended
    for episode in tqdm(range(args.episodes), desc=f"{args.policy} on {args.task}", unit="ep"):
        states: list[np.ndarray] = []
        info, steps = play_episode(env, policy, args.seed + episode, _options(args.instruction), states)
        for key in ((info["skill"], "all"), (info["skill"], policy.style)):
            wins[key][0] += int(info["success"])
            wins[key][1] += 1
        lengths.append(steps)
        ending = None if info["success"] else how_it_ended(BY_TEXT[info["instruction"]], states)
        if ending is not None:
            endings[info["skill"]].append(ending)

    def row(name: str, won: int, played: int) -> str:
        lo, hi = wilson_interval(won, played)
        return f"  {name:<22} {won / played:6.1%}  [{lo:6.1%}, {hi:6.1%}]  ({won}/{played})"

    total = sum(won for (_, style), (won, _) in wins.items() if style == "all")
    print(f"{args.policy} policy on {args.task}, noise scale {args.noise_scale:g}, "
          f"seeds {args.seed}..{args.seed + args.episodes - 1} (success, Wilson 95% interval)")
    for (skill, style), (won, played) in sorted(wins.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])):
        print(row(skill if style == "all" else f"  {style}", won, played))
    print(row("all", total, args.episodes) + f", mean episode length {np.mean(lengths):.1f} steps")
    for skill, ended in sorted(endings.items()):
        print(f"  {skill} {ending_line(skill, summarise_endings(skill, ended))}")
    return 0
