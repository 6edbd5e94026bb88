"""`qtbench data ...`: generate, list, inspect, verify and export datasets."""

from __future__ import annotations

import argparse

from qtbench.data.profiles import PROFILES, profile_table

TASK_HELP = (
    "task name, or several separated by commas (drawer_open, drawer_close, pick_place, "
    "move_near, all; 'all' is the multi-task env, not a shortcut for every task)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="generate, inspect, verify and export the Minari datasets")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    gen = sub.add_parser(
        "generate",
        help="collect demos-v0, failures-v0 and mixed-v0 of a task",
        description=(
            "Collect a task's datasets qtbench/<task>/{demos,failures,mixed}-v0 under "
            "$MINARI_DATASETS_PATH (Minari's default when unset), replacing existing ones. "
            f"Profiles: {profile_table()}. The same task, profile and seed give the same "
            "episodes for any --workers."
        ),
    )
    gen.add_argument("--task", required=True, help=TASK_HELP)
    gen.add_argument("--profile", default="default", choices=list(PROFILES), help="dataset size (default: default)")
    gen.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    gen.add_argument("--workers", type=int, default=1, help="collector processes (default 1)")
    gen.add_argument(
        "--autonomous-policy", metavar="CHECKPOINT", default=None,
        help="collect the failures with a trained qtbench policy (a training checkpoint directory "
        "or its last.pt; the paper used BC) instead of the scripted autonomous collector; the "
        "task's datasets the policy was trained on must be present",
    )
    gen.set_defaults(func=cmd_generate)

    lst = sub.add_parser("list", help="list the qtbench datasets present")
    lst.set_defaults(func=cmd_list)

    info = sub.add_parser("info", help="episodes, steps, success fraction and per-instruction counts")
    info.add_argument("dataset", help="dataset id, e.g. qtbench/drawer_open/mixed-v0 (or drawer_open/mixed)")
    info.set_defaults(func=cmd_info)

    ver = sub.add_parser("verify", help="recompute content hashes and compare them with the manifests")
    ver.add_argument("datasets", nargs="*", help="dataset ids (default: every dataset listed)")
    ver.set_defaults(func=cmd_verify)

    exp = sub.add_parser("export-d4rl", help="write a dataset as a D4RL-style .npz")
    exp.add_argument("dataset", help="dataset id")
    exp.add_argument("out", help="output .npz path")
    exp.set_defaults(func=cmd_export)


def _tasks(arg: str) -> list[str]:
    from qtbench.data.store import known_tasks
    from qtbench.errors import unknown_name

    tasks = [t.strip() for t in arg.split(",") if t.strip()]
    for task in tasks:
        if task not in known_tasks():
            raise unknown_name("task", task, known_tasks())
    return tasks


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    from qtbench.data.generate import generate_task

    for task in _tasks(args.task):
        start = time.perf_counter()
        manifests = generate_task(
            task, args.profile, args.seed, args.workers, autonomous_policy=args.autonomous_policy
        )
        took = time.perf_counter() - start
        for m in manifests.values():
            print(f"{m['dataset_id']}: {m['episodes']} episodes, {m['steps']} steps, {m['content_hash'][:19]}")
        print(
            f"{task}: {took:.1f} s; discarded {manifests['mixed']['discarded_demo_attempts']} failed demo attempts "
            f"and {manifests['mixed']['discarded_autonomous_successes']} successful autonomous episodes"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from qtbench.data.store import MANIFEST_NAME, dataset_dir, datasets_root, list_datasets

    ids = list_datasets()
    if not ids:
        print(f"no qtbench datasets under {datasets_root()}; create some with `qtbench data generate --task drawer_open`")
        return 0
    print(f"datasets under {datasets_root()}:")
    for did in ids:
        try:
            m = json.loads((dataset_dir(did) / MANIFEST_NAME).read_text())
            print(f"  {did:36s} {m['episodes']:6d} episodes {m['steps']:8d} steps  profile {m['profile']}, seed {m['seed']}")
        except (OSError, ValueError, KeyError):
            print(f"  {did:36s} (no readable manifest: run `qtbench data verify {did}`)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qtbench.data.manifest import summarize
    from qtbench.data.store import parse_dataset_id, read_dataset

    task, split = parse_dataset_id(args.dataset)
    stored = read_dataset(task, split, verify=False)
    s, m = summarize(stored.episodes), stored.manifest
    print(f"{stored.dataset_id}  (profile {m.get('profile')}, seed {m.get('seed')})")
    print(f"  episodes            {s['episodes']}")
    print(f"  steps               {s['steps']}")
    print(f"  success fraction    {s['success_fraction']:.3f}")
    print(f"  mean episode length {s['mean_episode_length']:.1f}")
    print(f"  discarded           {m.get('discarded_demo_attempts', 0)} failed demo attempts, "
          f"{m.get('discarded_autonomous_successes', 0)} successful autonomous episodes")
    print(f"  content hash        {m.get('content_hash')}")
    print("  per instruction:")
    for text, count in s["per_instruction"].items():
        print(f"    {count:5d}  {text}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from qtbench.data.store import list_datasets, parse_dataset_id, read_dataset

    ids = args.datasets or list_datasets()
    for did in ids:
        task, split = parse_dataset_id(did)
        stored = read_dataset(task, split, verify=True)
        print(f"ok  {stored.dataset_id}  {stored.manifest['content_hash']}")
    if not ids:
        print("no qtbench datasets to verify")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qtbench.data.d4rl import export_d4rl

    shapes = export_d4rl(args.dataset, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0
