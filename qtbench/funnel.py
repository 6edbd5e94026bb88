"""Stage funnels: how far the evaluation episodes of a run got, stage by stage.

Reads the ``stages`` rows that evaluation writes into eval.json (see
``qtbench.results.stage_funnel``) and renders them: one compact line per skill for the
run summary, and for the leaderboard a table per skill (rows = task and algorithm) and a
plot. Beside them: where the failed episodes first closed the fingers (``first_closure``),
how the failed episodes of the object skills ended (``how_failures_ended``, in the run
summary) and the success per demonstrator style attempted (``per_attempted_style``). Funnels pool
the episodes of every seed of a group (the fraction of all its episodes that passed each
stage). eval.json files written before stages were tracked
have no funnel: they are left out and named in a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

PLOT_NAME = "funnels.png"
MISSING_HINT = "`qtbench eval RUN_DIR` adds funnels to a run whose checkpoint exists"


def _pct(rate: float) -> str:
    return f"{100 * rate:.0f}%"


def compact(record: dict[str, Any]) -> str:
    """One line per skill, e.g. ``drawer_open (30 ep): reached_handle 90% > ... > open 7%``."""
    rows = {skill: row["stages"] for skill, row in record.get("per_skill", {}).items() if "stages" in row}
    if not rows:
        return f"no stage funnel in this eval.json (written before stages were tracked; {MISSING_HINT})"
    lines = []
    for skill, funnel in rows.items():
        episodes = record["per_skill"][skill]["episodes"]
        steps = " > ".join(f"{n} {_pct(r)}" for n, r in zip(funnel["names"], funnel["reached"]))
        lines.append(f"{skill} ({episodes} ep): {steps}")
        closures = record["per_skill"][skill].get("first_closure")
        if closures:
            lines.append(f"  {closure_line(closures)}")
        endings = record["per_skill"][skill].get("how_failures_ended")
        if endings:
            lines.append(f"  {ending_line(skill, endings)}")
        styles = record["per_skill"][skill].get("per_attempted_style")
        if styles:
            lines.append("  success per demonstrator style attempted: " + ", ".join(
                f"{style} {_pct(row['success_rate'])} of {row['attempts']}" for style, row in styles.items()))
    return "\n".join(lines)


def miss_per_axis(closures: dict[str, Any]) -> str | None:
    """The closures on nothing's median miss (absolute offset) per axis, e.g. ``x 0.4, y 3.1, z
    5.3 cm`` (``envs.attempts.summarise_closures``); None when not recorded (older eval.json)."""
    offset = closures.get("on_nothing_median_abs_offset_m")
    if offset is None:
        return None
    return ", ".join(f"{axis} {100 * value:.1f}" for axis, value in zip("xyz", offset)) + " cm"


def closure_line(closures: dict[str, Any]) -> str:
    """e.g. ``failed episodes (180) first closed the fingers: at the instructed target 30%, ...``,
    in the report order (eval.json stores keys sorted)."""
    from qtbench.envs.attempts import CLOSURE_VERDICTS, ON_NOTHING

    n, median = closures["failed_episodes"], closures.get("on_nothing_median_m")
    parts = []
    for verdict in CLOSURE_VERDICTS:
        count = closures["counts"].get(verdict, 0)
        extra = ""
        if verdict == ON_NOTHING and median is not None:
            axes = miss_per_axis(closures)
            extra = f" (median {100 * median:.1f} cm away" + (f"; per axis {axes})" if axes else ")")
        parts.append(f"{verdict} {_pct(count / n)}{extra}")
    return f"failed episodes ({n}) first closed the fingers: " + ", ".join(parts)


def ending_line(skill: str, endings: dict[str, Any]) -> str:
    """e.g. ``failed episodes (137) ended: never held the object 3%, let go after lifted 40%, ...``
    (``envs.attempts.summarise_endings``), in the report order (eval.json stores keys sorted)."""
    from qtbench.envs.attempts import ending_verdicts

    n, counts = endings["failed_episodes"], endings["counts"]
    return f"failed episodes ({n}) ended: " + ", ".join(
        f"{verdict} {_pct(counts.get(verdict, 0) / n)}" for verdict in ending_verdicts(skill))


@dataclass(frozen=True)
class FunnelRow:
    """One skill's funnel of one (task, label) group, pooled over its seeds."""

    task: str
    label: str
    skill: str
    names: tuple[str, ...]
    counts: tuple[int, ...]
    episodes: int
    seeds: tuple[int, ...]

    @property
    def reached(self) -> tuple[float, ...]:
        return tuple(c / self.episodes if self.episodes else 0.0 for c in self.counts)


def funnel_rows(entries: Iterable[tuple[str, str, int, dict[str, Any]]]) -> tuple[list[FunnelRow], list[str]]:
    """Pool ``(task, label, seed, eval record)`` entries into rows; also the runs without funnels.

    Returns the rows (in the order their groups first appear) and "task/label seed k"
    names of the records that hold no funnel.
    """
    pooled: dict[tuple[str, str, str], dict[str, Any]] = {}
    missing = []
    for task, label, seed, record in entries:
        skills = {s: row["stages"] for s, row in record.get("per_skill", {}).items() if "stages" in row}
        if not skills:
            missing.append(f"{task}/{label} seed {seed}")
            continue
        for skill, funnel in skills.items():
            group = pooled.setdefault((task, label, skill), {"names": tuple(funnel["names"]), "counts": None,
                                                            "episodes": 0, "seeds": []})
            counts = [int(c) for c in funnel["counts"]]
            group["counts"] = counts if group["counts"] is None else [a + b for a, b in zip(group["counts"], counts)]
            group["episodes"] += int(record["per_skill"][skill]["episodes"])
            group["seeds"].append(int(seed))
    rows = [FunnelRow(task, label, skill, g["names"], tuple(g["counts"]), g["episodes"], tuple(sorted(g["seeds"])))
            for (task, label, skill), g in pooled.items()]
    return rows, missing


def funnel_markdown(entries: Iterable[tuple[str, str, int, dict[str, Any]]]) -> str:
    """The leaderboard's funnel section: one table per skill, and a note on runs without one."""
    from qtbench.benchmarks_md import markdown_table

    rows, missing = funnel_rows(entries)
    parts = ["### Stage funnels", "",
             "The percentage of evaluation episodes that passed each stage of their skill, in order "
             "(the stages are defined beside each skill's success test in `envs/<skill>.py`; the "
             "last stage is success). Episodes pooled over the seeds listed."]
    for skill in dict.fromkeys(r.skill for r in rows):
        members = [r for r in rows if r.skill == skill]
        body = [[r.task, f"`{r.label}`", *(f"{100 * x:.1f}" for x in r.reached), r.episodes,
                 ", ".join(map(str, r.seeds))] for r in members]
        parts += ["", f"`{skill}`:", "",
                  markdown_table(["task", "algorithm", *members[0].names, "episodes", "seeds"], body)]
    captions = (
        (closure_table, "Where the failed evaluation episodes first closed the fingers "
                        "(`qtbench.envs.attempts.first_closure`; grasping skills; percent of the failed episodes "
                        "pooled over the seeds listed; the last column: each seed's median distance from the "
                        "instructed knob or object of the closures on nothing):"),
        (ending_table, "How the failed evaluation episodes of the object skills ended (`qtbench.envs.attempts."
                       "how_it_ended`: never held the object, let go after the last stage that held when it was "
                       "last held, or still held it at the time limit; percent of the failed episodes pooled over "
                       "the seeds listed):"),
        (style_table, "Which demonstrator style the evaluation episodes attempted (`qtbench.envs.attempts."
                      "attempted_style`: the style nearest to where the hand met the knob or object; `none`: no "
                      "contact), and their success when they attempted it (Wilson 95% interval), pooled over the "
                      "seeds listed. An algorithm that learned which style works for it attempts the robust one "
                      "more often than the demonstrators' habit does:"),
    )
    for table_of, caption in captions:  # each pooled table under its caption, when any run records it
        table = table_of(entries)
        if table:
            parts += ["", caption, "", table]
    if not rows:
        parts += ["", f"No run has a stage funnel yet: every eval.json here was written before stages "
                  f"were tracked ({MISSING_HINT})."]
    elif missing:
        parts += ["", f"Without a funnel (evaluated before stages were tracked; {MISSING_HINT}): "
                  + ", ".join(missing) + "."]
    return "\n".join(parts)


def _grouped(entries: Iterable[tuple[str, str, int, dict[str, Any]]],
             field: str) -> dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]]:
    """The skill rows of eval records that hold ``field``, grouped by (task, algorithm, skill):
    each group's (seed, skill row) pairs, groups in the order they first appear."""
    groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    for task, label, seed, record in entries:
        for skill, row in record.get("per_skill", {}).items():
            if row.get(field):
                groups.setdefault((task, label, skill), []).append((int(seed), row))
    return groups


def _seeds(members: list[tuple[int, dict[str, Any]]]) -> str:
    return ", ".join(str(seed) for seed, _ in members)


def closure_table(entries: Iterable[tuple[str, str, int, dict[str, Any]]]) -> str | None:
    """The failed episodes' first closures pooled per (task, algorithm, skill), as a table
    (None when no eval.json records them)."""
    from qtbench.benchmarks_md import markdown_table
    from qtbench.envs.attempts import CLOSURE_VERDICTS

    body = []
    for (task, label, skill), members in _grouped(entries, "first_closure").items():
        closures = [row["first_closure"] for _, row in members]
        n = sum(c["failed_episodes"] for c in closures)
        shares = [f"{100 * sum(c['counts'].get(v, 0) for c in closures) / n:.0f}" for v in CLOSURE_VERDICTS]
        medians = ["–" if c.get("on_nothing_median_m") is None else f"{100 * c['on_nothing_median_m']:.1f}"
                   for c in closures]
        axes = [miss_per_axis(c) or "–" for c in closures]
        body.append([task, f"`{label}`", skill, n, *shares, " / ".join(medians) + " cm", " / ".join(axes),
                     _seeds(members)])
    if not body:
        return None
    return markdown_table(["task", "algorithm", "skill", "failed episodes", *CLOSURE_VERDICTS,
                           "on nothing, median distance", "on nothing, median miss per axis", "seeds"], body)


def ending_table(entries: Iterable[tuple[str, str, int, dict[str, Any]]]) -> str | None:
    """How the failed episodes of the object skills ended, pooled per (task, algorithm, skill):
    one table per skill, whose verdicts name its stages (None when no eval.json records them)."""
    from qtbench.benchmarks_md import markdown_table
    from qtbench.envs.attempts import ending_verdicts

    tables = []
    groups = _grouped(entries, "how_failures_ended")
    for skill in dict.fromkeys(skill for _, _, skill in groups):
        verdicts = ending_verdicts(skill)
        body = []
        for (task, label, _), members in ((k, v) for k, v in groups.items() if k[2] == skill):
            endings = [row["how_failures_ended"] for _, row in members]
            n = sum(e["failed_episodes"] for e in endings)
            shares = [f"{100 * sum(e['counts'].get(v, 0) for e in endings) / n:.0f}" for v in verdicts]
            body.append([task, f"`{label}`", n, *shares, _seeds(members)])
        tables.append(f"`{skill}`:\n\n" + markdown_table(["task", "algorithm", "failed episodes", *verdicts, "seeds"], body))
    return "\n\n".join(tables) if tables else None


def style_table(entries: Iterable[tuple[str, str, int, dict[str, Any]]]) -> str | None:
    """Episodes per attempted style and their success, pooled per (task, algorithm, skill), as a
    table (None when no eval.json records styles)."""
    from qtbench.benchmarks_md import markdown_table
    from qtbench.results import wilson_interval

    body = []
    for (task, label, skill), members in _grouped(entries, "per_attempted_style").items():
        episodes = sum(int(row["episodes"]) for _, row in members)
        tallies: dict[str, list[int]] = {}
        for _, row in members:
            for style, tally in row["per_attempted_style"].items():
                counts = tallies.setdefault(style, [0, 0])
                counts[0] += int(tally["attempts"])
                counts[1] += int(tally["successes"])
        for style, (attempts, successes) in tallies.items():
            lo, hi = wilson_interval(successes, attempts)
            body.append([task, f"`{label}`", skill, style, f"{100 * attempts / episodes:.0f}",
                         f"{100 * successes / attempts:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]", attempts,
                         _seeds(members)])
    if not body:
        return None
    return markdown_table(["task", "algorithm", "skill", "attempted style", "% of episodes",
                           "success when attempted %", "episodes", "seeds"], body)


def funnel_plot(entries: Iterable[tuple[str, str, int, dict[str, Any]]], path: Path) -> Path | None:
    """One panel per skill: percent of episodes past each stage, one line per task and algorithm."""
    from qtbench.plots import _pyplot

    rows, _ = funnel_rows(entries)
    if not rows:
        return None
    skills = list(dict.fromkeys(r.skill for r in rows))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(skills), figsize=(max(6.5, 4.2 * len(skills)), 3.6), squeeze=False)
    for ax, skill in zip(axes[0], skills):
        members = [r for r in rows if r.skill == skill]
        for r in members:
            ax.plot(range(len(r.names)), [100 * x for x in r.reached], marker="o", linewidth=1,
                    label=f"{r.label} ({r.task}, {r.episodes} ep)")
        names = members[0].names
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize="small")
        ax.set_ylim(0, 105)
        ax.set_title(skill, fontsize="small")
        ax.legend(fontsize="x-small")
    axes[0][0].set_ylabel("episodes past the stage (%)")
    fig.suptitle("stage funnels (evaluation episodes pooled over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
