"""Demonstrator-style headroom: does imitating the robust style beat imitating all demos?

The demonstrations mix a robust and a fragile style per skill (``qtbench.envs.plans``).
Offline RL has room to beat imitation only if a policy that copies the robust style alone
does clearly better than one that copies every demonstration. This command reads, per task
and seed, the ``bc`` cell trained on all demos and the ``bc+demo_styles__robust___`` cell
trained on the robust style's demos (``qtbench run --algo bc --set demo_styles=robust``),
evaluated on the same episodes (same run seed), and writes the "headroom" section of
benchmarks.md: each cell's mean over seeds with its 95% t-interval, the paired per-seed
difference with its own, and every seed's Wilson interval. Below it, the failure-collection
policy of the data those runs trained on, scored per style it attempted
(``qtbench.envs.attempts``; read from the failures manifest's ``per_attempted_style``), and
where its failed episodes first closed the fingers (``attempts.first_closure``: at the
instructed knob or object, at another one, on nothing, or never), which tells a reaching or
grounding failure, where no style is executed at all, from a failed grasp or pull.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from qtbench.errors import QtbenchError

log = logging.getLogger(__name__)

SECTION = "headroom"
DEFAULT_RESULTS = Path("results")
ALL_LABEL = "bc"
ROBUST_LABEL = "bc+demo_styles__robust___"
PRODUCE = ("make each seed K's pair with `qtbench run --algo bc --task T --seed K --results-dir {root}` "
           "and the same with `--set demo_styles=robust`")


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}"


def _episodes(record: dict[str, Any]) -> int:
    return sum(row["episodes"] for row in record["per_skill"].values())


def _wilson(record: dict[str, Any]) -> str:
    lo, hi = record["ci95"]
    return f"{_pct(record['success_rate'])} [{_pct(lo)}, {_pct(hi)}]"


def paired_cells(results_dir: Path) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    """task -> seed -> {"all": eval record, "robust": eval record}, for seeds that have both,
    trained with the same settings but the demo styles (a pair that differs in more, e.g. one
    made before `qtbench tune --freeze` changed bc's defaults, is left out with a warning)."""
    from qtbench.checkpoint import config_changes
    from qtbench.leaderboard import load_runs

    found: dict[str, dict[int, dict[str, Any]]] = {}
    for run in load_runs(results_dir):
        kind = {ALL_LABEL: "all", ROBUST_LABEL: "robust"}.get(run.label)
        if kind and run.algo == "bc":
            found.setdefault(run.task, {}).setdefault(run.seed, {})[kind] = run
    pairs: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for task, seeds in sorted(found.items()):
        for seed, pair in sorted(seeds.items()):
            if len(pair) < 2:
                continue
            other = set(config_changes(pair["robust"].config.get("algo_config", {}),
                                       pair["all"].config.get("algo_config", {}))) - {"demo_styles"}
            if other:
                log.warning("%s seed %d: the robust-only and all-demos runs differ in %s besides the demo styles: "
                            "left out (run both again with today's defaults)", task, seed, ", ".join(sorted(other)))
                continue
            pairs.setdefault(task, {})[seed] = {kind: run.eval for kind, run in pair.items()}
    return pairs


def collection_rows(task: str, profile: str) -> list[list[object]]:
    """The collection policy's attempts and successes per attempted style, from the failures
    manifest of ``task``'s ``profile`` datasets (none if they are not on this machine)."""
    from qtbench.data.store import MANIFEST_NAME, dataset_dir, dataset_id
    from qtbench.results import wilson_interval

    path = dataset_dir(dataset_id(task, "failures", profile)) / MANIFEST_NAME
    if not path.is_file():
        return []
    policy = json.loads(path.read_text()).get("collection_policy") or {}
    rows = []
    for style, row in (policy.get("per_attempted_style") or {}).items():
        lo, hi = wilson_interval(row["successes"], row["attempts"])
        rows.append([task, f"`{style}`", row["attempts"], f"{_pct(row['success_rate'])} [{_pct(lo)}, {_pct(hi)}]"])
    return rows


def closure_rows(task: str, profile: str) -> list[list[object]]:
    """Where the collection policy's failed episodes (the failures dataset of ``task``'s
    ``profile``) first closed the fingers: episodes per verdict, and the median distance from
    the instructed target of those that closed on nothing (none if the dataset is absent or the
    skill does not grasp)."""
    from qtbench.data.store import dataset_dir, dataset_id, read_dataset
    from qtbench.envs.attempts import CLOSURE_VERDICTS, first_closure, summarise_closures
    from qtbench.envs.instructions import BY_TEXT
    from qtbench.funnel import miss_per_axis

    did = dataset_id(task, "failures", profile)
    if not (dataset_dir(did) / "data").is_dir():
        return []
    episodes = read_dataset(did, verify=False).episodes
    summary = summarise_closures(first_closure(BY_TEXT[ep.instruction], ep.states) for ep in episodes)
    if summary is None:
        return []
    total, counts, median = summary["failed_episodes"], summary["counts"], summary["on_nothing_median_m"]
    return [[task, total, *(f"{counts[v]} ({100 * counts[v] / total:.0f}%)" for v in CLOSURE_VERDICTS),
             f"{100 * median:.1f} cm" if median is not None else "–", miss_per_axis(summary) or "–"]]


def render(cells: dict[str, dict[int, dict[str, dict[str, Any]]]], results_dir: Path, profile: str) -> str:
    from qtbench.leaderboard import aggregate, fmt_difference, fmt_pct, paired_difference
    from qtbench.benchmarks_md import markdown_table

    rows, seed_rows, collected = [], [], []
    for task, seeds in cells.items():
        if not seeds:
            continue
        ids = list(seeds)
        robust = aggregate([seeds[s]["robust"]["success_rate"] for s in ids], ids)
        every = aggregate([seeds[s]["all"]["success_rate"] for s in ids], ids)
        diff = paired_difference(robust, every)
        episodes = sorted({_episodes(seeds[s][k]) for s in ids for k in ("robust", "all")})
        rows.append([task, fmt_pct(robust), fmt_pct(every), fmt_difference(diff),
                     "/".join(str(e) for e in episodes), ", ".join(str(s) for s in ids)])
        for s, d in zip(diff.seeds, diff.values):
            seed_rows.append([task, s, _wilson(seeds[s]["robust"]), _wilson(seeds[s]["all"]), f"{100 * d:+.1f}"])
        collected += collection_rows(task, profile)
    if not rows:
        raise QtbenchError(f"no seed under {results_dir} has both the bc and the bc robust-only cell",
                           PRODUCE.format(root=results_dir))
    parts = [
        "## Demonstrator-style headroom (`qtbench headroom`)",
        "",
        "BC trained on the robust style's demonstrations only (`--set demo_styles=robust`) against BC "
        "trained on all demonstrations (the habit's style mix), evaluated on the same episodes per seed. "
        "Success in percent: mean ± standard deviation over seeds [95% t-interval of the mean]; the "
        "difference is robust-only minus all, paired by seed, with its 95% t-interval. Offline RL has room "
        "to beat imitation when the difference is clearly positive.",
        "",
        markdown_table(["task", "BC, robust-style demos", "BC, all demos", "robust − all (paired)",
                        "eval episodes per run", "seeds"], rows),
        "",
        "Per seed (success with its Wilson 95% interval):",
        "",
        markdown_table(["task", "seed", "BC, robust-style demos", "BC, all demos", "robust − all"], seed_rows),
    ]
    if collected:
        parts += ["", f"The failure-collection policy of the `{profile}` datasets (BC on all demos, "
                  "greedy), scored per style it attempted (`qtbench.envs.attempts`; `none`: it never met a "
                  "handle, drawer front or object the way a style does), over its collection attempts (Wilson "
                  "95% interval):", "",
                  markdown_table(["task", "attempted style", "attempts", "success %"], collected)]
    closures = [row for task in cells for row in closure_rows(task, profile)]
    if closures:
        from qtbench.envs.attempts import CLOSURE_VERDICTS

        parts += ["", "Where the collection policy's failed episodes (the failures dataset) of the grasping skills "
                  "(drawer_close pushes: its failures are not counted) first closed the "
                  "fingers (`qtbench.envs.attempts.first_closure`; the last columns: of those that closed on "
                  "nothing, the median distance from the instructed knob or object, and the median miss along "
                  "each axis):", "",
                  markdown_table(["task", "failed grasping episodes", *CLOSURE_VERDICTS, "closed on nothing, median distance",
                                  "closed on nothing, median miss per axis"], closures)]
    records = [seeds[s][k] for seeds in cells.values() for s in seeds for k in ("robust", "all")]
    budgets = sorted({json.dumps(r.get("train_steps")) for r in records})
    machines = sorted({str(r.get("machine", "unrecorded")) for r in records})
    parts += ["", f"- budget: {', '.join(budgets)} gradient steps per run (dataset profile {profile})",
              f"- results: `{results_dir}`; {PRODUCE.format(root=results_dir)}",
              f"- machine: {'; '.join(machines)}"]
    return "\n".join(parts)


def write_headroom(results_dir: Path, profile: str, benchmarks: Path) -> tuple[str, Path]:
    """Render the section from ``results_dir`` and write it into ``benchmarks``."""
    from qtbench.benchmarks_md import write_section

    if not results_dir.is_dir():
        raise QtbenchError(f"no results directory {results_dir}", PRODUCE.format(root=results_dir))
    body = render(paired_cells(results_dir), results_dir, profile)
    return body, write_section(SECTION, body, benchmarks)
