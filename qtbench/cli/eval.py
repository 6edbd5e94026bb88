"""`qtbench eval`, `qtbench probe` and `qtbench agreement`: diagnostics of a finished run, from its checkpoint.

``qtbench eval RUN_DIR`` re-evaluates the run's final weights (same episodes and seeds as
``qtbench run``) and rewrites its eval.json with stage funnels; ``--from-stage STAGE``
instead lets the scripted demo policy drive every episode until STAGE is passed and the
learned policy finish it, and writes ``eval_from_<STAGE>.json``; ``--horizon SKILL=STEPS``
runs the same episodes with a skill's time limit changed, into ``eval_horizon_<SKILL><STEPS>.json``.
``qtbench probe RUN_DIR``
scores the run's own dataset with the learned Q function (see ``qtbench.probe``);
``qtbench agreement RUN_DIR`` compares its greedy motion with its demos', step by step
(see ``qtbench.agreement``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from qtbench.errors import QtbenchError
from qtbench.loaded_run import load_run

log = logging.getLogger(__name__)

HANDOVER_FILE = "eval_from_{stage}.json"
HORIZON_FILE = "eval_horizon_{horizons}.json"  # e.g. eval_horizon_move_near70.json


def parse_horizons(items: list[str] | None) -> dict[str, int]:
    """``["move_near=70"]`` -> ``{"move_near": 70}``: skills' time limits for ``qtbench eval --horizon``."""
    from qtbench.envs.base import SKILLS_BY_NAME
    from qtbench.errors import unknown_name

    horizons = {}
    for item in items or []:
        skill, _, steps = item.partition("=")
        if skill not in SKILLS_BY_NAME:
            raise unknown_name("skill in --horizon", skill, list(SKILLS_BY_NAME))
        if not steps.isdigit() or int(steps) < 1:
            raise QtbenchError(f"--horizon {item!r}: the steps must be a positive integer", "e.g. --horizon move_near=70")
        horizons[skill] = int(steps)
    return horizons


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise QtbenchError(f"--device {args.device} requested but torch sees no CUDA device", "use --device cpu")


# ---- qtbench eval ------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from qtbench.atomic import atomic_write_json
    from qtbench.benchmarks_md import machine_description
    from qtbench.evaluate import default_episodes, evaluate_policy, handover_instructions
    from qtbench.funnel import compact
    from qtbench.reproduce import read_cell
    from qtbench.results import EVAL_FILE, handover_summary, qtbench_version, success_summary, summary_table

    _setup(args)
    horizons = parse_horizons(args.horizon)
    if horizons and args.from_stage is not None:
        raise QtbenchError("--horizon and --from-stage answer different questions", "use one of them per call")
    if args.from_stage is not None:  # a bad stage name fails before anything is loaded
        handover_instructions(read_cell(args.run_dir)[0].get("task", "all"), args.from_stage)
    run = load_run(args.run_dir, args.checkpoint_dir, args.device)
    task, seed = run.config["task"], int(run.config["seed"])
    episodes = run.config.get("eval_episodes_per_instruction") or default_episodes(task)
    if args.from_stage is None and not horizons:  # eval.json stays the record of the run's own evaluation
        if run.checkpoint_step != run.record.get("train_steps"):
            raise QtbenchError(
                f"the checkpoint is at step {run.checkpoint_step} but {run.run_dir / EVAL_FILE} describes "
                f"step {run.record.get('train_steps')}: rewriting it would mix two sets of weights",
                "finish the run first (`qtbench run ... --resume`), or evaluate with --from-stage",
            )
        if args.eval_episodes and args.eval_episodes != episodes:
            raise QtbenchError(
                f"--eval-episodes {args.eval_episodes}: eval.json holds the run's own evaluation "
                f"({episodes} episodes per instruction, as in config.json)",
                "drop --eval-episodes, or use it with --from-stage",
            )
    episodes = args.eval_episodes or episodes
    outcomes, seconds = evaluate_policy(
        run.act, task, run.algo_config.history, int(episodes), seed, target_return=run.algo_config.target_return,
        progress=not args.no_progress, handover=args.from_stage, horizons=horizons,
    )
    common = {"machine": machine_description(), "qtbench_version": qtbench_version(), "eval_seconds": seconds}
    if horizons:
        own = {k: v for k, v in run.record.items() if k != "learning_curve"}  # the curve ran at the own limits
        record = {**own, **common, **success_summary(outcomes), "checkpoint_step": run.checkpoint_step,
                  "episodes_per_instruction": int(episodes), "horizons": horizons}
        name = "_".join(f"{skill}{steps}" for skill, steps in sorted(horizons.items()))
        path = atomic_write_json(run.run_dir / HORIZON_FILE.format(horizons=name), record)
        print(f"time limits {horizons} (the run's own: success {run.record.get('success_rate', float('nan')):.1%})")
        print(summary_table(record))
        print("\nstage funnel (episodes past each stage, in order):\n" + compact(record))
    elif args.from_stage is None:
        record = {**run.record, **common, **success_summary(outcomes)}
        if record["success_rate"] != run.record.get("success_rate"):
            log.warning("success differs from the stored eval.json (%.3f now, %.3f before): "
                        "the checkpoint may not hold the weights that were evaluated",
                        record["success_rate"], run.record.get("success_rate"))
        path = atomic_write_json(run.run_dir / EVAL_FILE, record)
        print(summary_table(record))
        print("\nstage funnel (episodes past each stage, in order):\n" + compact(record))
    else:
        record = {"algo": run.config["algo"], "task": task, "seed": seed, "checkpoint_step": run.checkpoint_step,
                  "episodes_per_instruction": int(episodes), **common, **handover_summary(outcomes, args.from_stage)}
        path = atomic_write_json(run.run_dir / HANDOVER_FILE.format(stage=args.from_stage), record)
        print(handover_table(record))
    print(f"\nwritten: {path}")
    return 0


def handover_table(record: dict[str, Any]) -> str:
    """Success from the hand-over per skill with 95% Wilson intervals, and who never got there."""
    from qtbench.results import success_table

    stage = record["from_stage"]
    head = (f"{record['algo']} on {record['task']} (seed {record['seed']}, step {record['checkpoint_step']}), "
            f"from stage {stage}: the demo policy drove {record['episodes_total']} episodes and handed "
            f"{record['episodes']} over; success of the learned policy from there:")
    notes = [f"- the demo never passed {stage}: {record['demo_never_reached']} episodes (not counted above)",
             f"- the demo succeeded in the step it passed {stage}: {record['demo_finished_first']} episodes "
             "(not counted above)"]
    return "\n".join([head, "", success_table(record), "", *notes])


# ---- qtbench probe -----------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    from qtbench.probe import PROBE_FILE, PROBE_PLOT, format_probe, probe_plot, probe_run

    _setup(args)
    run = load_run(args.run_dir, args.checkpoint_dir, args.device)
    if not hasattr(run.algorithm, "values"):
        print(f"qtbench probe: skipped: {run.config['algo']} learns no Q function of actions "
              "(probes need one: q_transformer, iql, cql)")
        return 0
    from qtbench.atomic import atomic_write_json

    result = probe_run(run, radius=args.radius, max_transitions=args.max_transitions, progress=not args.no_progress)
    path = atomic_write_json(run.run_dir / PROBE_FILE, result)
    image = probe_plot(result, run.run_dir / PROBE_PLOT)
    print(format_probe(result))
    print(f"\nwritten: {path}, {image}")
    return 0


# ---- qtbench agreement -------------------------------------------------------------------
def cmd_agreement(args: argparse.Namespace) -> int:
    from qtbench.agreement import AGREEMENT_FILE, agreement_run, format_agreement
    from qtbench.atomic import atomic_write_json

    _setup(args)
    run = load_run(args.run_dir, args.checkpoint_dir, args.device)
    result = agreement_run(run, progress=not args.no_progress)
    path = atomic_write_json(run.run_dir / AGREEMENT_FILE, result)
    print(format_agreement(result))
    print(f"\nwritten: {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a cell's results directory, e.g. results/drawer_open/q_transformer/seed2")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"),
                   help="the checkpoint root the run was trained with (default: checkpoints)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="re-evaluate a finished run from its checkpoint (stage funnels), or from a stage with --from-stage",
        description=(
            "Restore the run's last checkpoint and evaluate it on the same episodes and seeds as "
            "`qtbench run`. Without --from-stage, eval.json is rewritten with stage funnels. With "
            "--from-stage STAGE, the scripted demo policy drives each episode until STAGE is passed, "
            "then the learned policy takes over; success from there (95% Wilson intervals) and the "
            "episodes where the demo never got there go to eval_from_STAGE.json in RUN_DIR. With "
            "--horizon SKILL=STEPS, the same episodes run with that skill's time limit changed "
            "(would the policy finish with more time?), into eval_horizon_SKILLSTEPS.json."
        ),
    )
    _common(p)
    p.add_argument("--from-stage", metavar="STAGE", default=None,
                   help="hand over at this stage, e.g. for drawer_open reached_handle, grasped_handle or "
                        "pulled_half (an unknown name lists the task's stages)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per instruction with --from-stage or --horizon (default: the run's own count)")
    p.add_argument("--horizon", metavar="SKILL=STEPS", action="append", default=None,
                   help="evaluate with this skill's time limit instead (repeatable), e.g. move_near=70")
    p.set_defaults(func=cmd_eval)
    q = subparsers.add_parser(
        "probe",
        help="learned values of demo vs failure actions on the run's dataset (probe.json, probe.png)",
        description=(
            "Score the run's own training dataset with its learned Q function: mean value of demo "
            "and failure actions, how often the demo action ranks above a failure action seen in a "
            "similar state, the greedy action's value, and calibration against the Monte-Carlo "
            "return. Needs an algorithm with values() (q_transformer, iql, cql); others are skipped."
        ),
    )
    _common(q)
    q.add_argument("--radius", type=float, default=None,
                   help="max normalised-state distance of a 'similar' failure state (default: see qtbench.probe)")
    q.add_argument("--max-transitions", type=int, default=None,
                   help="probe at most this many transitions, drawn uniformly (default: all)")
    q.set_defaults(func=cmd_probe)
    a = subparsers.add_parser(
        "agreement",
        help="the run's greedy motion against its demos' own, by demo step (agreement.json)",
        description=(
            "Act greedily in the states of the run's own demonstrations (with their history windows) "
            "and compare the motion with the demo's: median cosine and the share that agrees, for the "
            "demos' first steps one by one and the later steps together. A policy that agrees from step 1 "
            "on but not at step 0 continues motions it sees instead of choosing where to go "
            "(see qtbench.agreement). Any algorithm."
        ),
    )
    _common(a)
    a.set_defaults(func=cmd_agreement)
