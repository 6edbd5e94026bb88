"""`qtbench data ...`: generate, list, inspect, verify and export datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        help="make a task's demos, BC collection policy, failures and mixed datasets",
        description=(
            "Make a task's datasets under $MINARI_DATASETS_PATH (Minari's default when unset): scripted "
            "demos (qtbench/<task>/demos-<profile>-v0), then the collection policy (the bc baseline "
            "trained on those demos, kept in qtbench/<task>/collection-policy-<profile>/), then its "
            "failed greedy episodes (qtbench/<task>/failures-<profile>-bc-v0, successes discarded) and "
            "demos + failures (qtbench/<task>/mixed-<profile>-bc-v0). Other profiles and failure "
            "sources get their own ids; this replaces only the datasets of the asked variant. "
            f"Profiles: {profile_table()}. The same task, profile and seed give the same episodes "
            "for any --workers."
        ),
    )
    gen.add_argument("--task", required=True, help=TASK_HELP)
    gen.add_argument("--profile", default="default", choices=list(PROFILES), help="dataset size (default: default)")
    gen.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    gen.add_argument("--workers", type=int, default=1, help="processes collecting the scripted episodes (default 1)")
    gen.add_argument(
        "--failures", default="bc", metavar="SOURCE",
        help="who collects the failures: bc (default: the BC policy trained on the demos, as in the paper) or "
        "scripted (the erring scripted collector: harder, off the demos' distribution)",
    )
    gen.add_argument(
        "--autonomous-policy", metavar="CHECKPOINT", default=None,
        help="collect the failures with this trained qtbench policy instead (a training checkpoint "
        "directory or its last.pt); ids get the source policy<weights hash>; the datasets of this "
        "profile the policy was trained on must be present",
    )
    gen.add_argument("--resume", action="store_true",
                     help="reuse the stored demos of this seed and the collection policy trained on them "
                     "(continuing a killed training) instead of making them again")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. when logging to a file)")
    gen.set_defaults(func=cmd_generate)

    lst = sub.add_parser("list", help="list the qtbench datasets and collection policies present")
    lst.set_defaults(func=cmd_list)

    info = sub.add_parser("info", help="episodes, steps, success fraction and per-instruction counts")
    info.add_argument("dataset", help="dataset id, e.g. qtbench/drawer_open/mixed-default-bc-v0 "
                      "(or drawer_open/mixed-default-bc)")
    info.set_defaults(func=cmd_info)

    ver = sub.add_parser("verify", help="recompute content hashes and compare them with the manifests")
    ver.add_argument("datasets", nargs="*", help="dataset ids (default: every dataset listed)")
    ver.set_defaults(func=cmd_verify)

    pol = sub.add_parser(
        "eval-policy", help="evaluate a task's collection policy on the runs' evaluation episodes",
        description="Evaluate the BC collection policy of a task's datasets on the evaluation episodes that "
        "every run with each --seeds value meets (paired with the learners); writes "
        "<results-dir>/<task>/collection_policy.json, which `qtbench leaderboard` lists beside the runs.",
    )
    pol.add_argument("--task", required=True, help=TASK_HELP)
    pol.add_argument("--profile", default="default", choices=list(PROFILES), help="dataset size (default: default)")
    pol.add_argument("--data-seed", type=int, default=0, help="data seed of the datasets (default 0)")
    pol.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                     help="run seeds whose evaluation episodes to use (default 0)")
    pol.add_argument("--eval-episodes", type=int, default=None, metavar="N",
                     help="episodes per instruction (default: the runs' default for the task)")
    pol.add_argument("--policy-task", default=None, metavar="TASK",
                     help="whose collection policy to evaluate: the task's own (default) or 'all' (the suite's "
                     "multi-task policy, scored on --task's episodes; written to "
                     "<results-dir>/<task>/collection_policy_from_all.json)")
    pol.add_argument("--results-dir", default="results")
    pol.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. when logging to a file)")
    pol.set_defaults(func=cmd_eval_policy)

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
    from qtbench.datasets import check_failure_source, generate_datasets

    check_failure_source(args.failures)
    for task in _tasks(args.task):
        made = generate_datasets(task, args.profile, args.seed, args.failures, args.autonomous_policy,
                                 args.workers, progress=not args.no_progress, resume=args.resume)
        for m in made.manifests.values():
            print(f"{m['dataset_id']}: {m['episodes']} episodes, {m['steps']} steps, {m['content_hash'][:19]}")
        mixed = made.manifests["mixed"]
        policy = mixed.get("collection_policy")
        if policy:
            print(f"failures collected by {policy['checkpoint']} (weights {policy['weights_hash'][:19]}), "
                  f"which succeeded in {policy['successes']} of {policy['attempts']} attempts "
                  f"({policy['success_rate']:.1%}, successes discarded)")
        print(f"{task}: {sum(made.seconds.values()):.1f} s ("
              + ", ".join(f"{stage} {s:.1f} s" for stage, s in made.seconds.items())
              + f"); discarded {mixed['discarded_demo_attempts']} failed demo attempts and "
              f"{mixed['discarded_autonomous_successes']} successful autonomous episodes")
    return 0


def cmd_eval_policy(args: argparse.Namespace) -> int:
    import json

    from qtbench.collection_policy import evaluate_collection_policy
    from qtbench.errors import QtbenchError

    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise QtbenchError(f"--eval-episodes {args.eval_episodes}: must be at least 1", "pass --eval-episodes 100")
    policy_task = None
    if args.policy_task:
        (policy_task, *more) = _tasks(args.policy_task)
        if more:
            raise QtbenchError(f"--policy-task {args.policy_task}: one task only", "pass --policy-task all")
    for task in _tasks(args.task):
        path = evaluate_collection_policy(task, args.profile, args.data_seed, args.seeds, args.eval_episodes,
                                          Path(args.results_dir), progress=not args.no_progress,
                                          policy_task=policy_task)
        record = json.loads(path.read_text())
        for seed, result in record["seeds"].items():
            lo, hi = result["ci95"]
            print(f"{record['policy_task']}'s collection policy, {task}, seed {seed}'s evaluation episodes: "
                  f"{result['success_rate']:.1%} "
                  f"[{lo:.1%}, {hi:.1%}] over {result['episodes']} episodes")
        print(f"written: {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from qtbench.data.store import MANIFEST_NAME, NAMESPACE, dataset_dir, datasets_root, list_datasets

    ids = list_datasets()
    if not ids:
        print(f"no qtbench datasets under {datasets_root()}; create some with `qtbench data generate --task drawer_open`")
        return 0
    print(f"datasets under {datasets_root()}:")
    for did in ids:
        try:
            m = json.loads((dataset_dir(did) / MANIFEST_NAME).read_text())
            print(f"  {did:44s} {m['episodes']:6d} episodes {m['steps']:8d} steps  seed {m['seed']}  "
                  f"{m['content_hash'][:19]}")
        except (OSError, ValueError, KeyError):
            print(f"  {did:44s} (no readable manifest: run `qtbench data verify {did}`)")
    policies = sorted((datasets_root() / NAMESPACE).glob("*/collection-policy-*/last.pt"))
    if policies:
        print("collection policies:")
        for path in policies:
            print(f"  {path.parent.relative_to(datasets_root()).as_posix()}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qtbench.data.episode import summarize
    from qtbench.data.store import parse_dataset_id, read_dataset
    from qtbench.envs.attempts import failures_profile
    from qtbench.funnel import ending_line

    stored = read_dataset(parse_dataset_id(args.dataset).id, verify=False)
    s, m = summarize(stored.episodes), stored.manifest
    print(f"{stored.dataset_id}  (profile {m.get('profile')}, seed {m.get('seed')})")
    print(f"  episodes            {s['episodes']}")
    print(f"  steps               {s['steps']}")
    print(f"  success fraction    {s['success_fraction']:.3f}")
    print(f"  mean episode length {s['mean_episode_length']:.1f}")
    print(f"  discarded           {m.get('discarded_demo_attempts', 0)} failed demo attempts, "
          f"{m.get('discarded_autonomous_successes', 0)} successful autonomous episodes")
    policy = m.get("collection_policy")
    if policy:
        print(f"  failures collected  by {policy['algo']} {policy['checkpoint']} (step {policy['step']}, "
              f"weights {policy['weights_hash'][:19]}, success rate {policy['success_rate']:.3f})")
    print(f"  content hash        {m.get('content_hash')}")
    failed = [(e.instruction, e.states) for e in stored.episodes if not float(e.rewards.sum()) > 0]
    for skill, held in failures_profile(failed).items():
        styles = ", ".join(f"{style} {n / held['episodes']:.0%}" for style, n in held["attempted"].items())
        print(f"  {skill} failed episodes ({held['episodes']}) attempted: {styles}")
        if held["endings"]:
            print(f"  {skill} {ending_line(skill, held['endings'])}")
    print("  per instruction:")
    for text, count in s["per_instruction"].items():
        print(f"    {count:5d}  {text}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from qtbench.data.store import list_datasets, parse_dataset_id, read_dataset

    ids = args.datasets or list_datasets()
    for did in ids:
        stored = read_dataset(parse_dataset_id(did).id, verify=True)
        print(f"ok  {stored.dataset_id}  {stored.manifest['content_hash']}")
    if not ids:
        print("no qtbench datasets to verify")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qtbench.data.d4rl import export_d4rl

    shapes = export_d4rl(args.dataset, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0
