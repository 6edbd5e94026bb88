"""Stage funnels: the run summary line, pooling over seeds, the leaderboard table and plot,
and old eval.json files without stages."""

from __future__ import annotations

import json

from qtbench import funnel
from qtbench import leaderboard as lb

from test_leaderboard import write_cell

NAMES = ["reached_handle", "grasped_handle", "pulled_half", "open"]


def with_stages(cell, counts: list[int], episodes: int = 10) -> dict:
    """Add a drawer_open funnel to a cell's eval.json, as evaluation writes it."""
    path = cell / "eval.json"
    record = json.loads(path.read_text())
    record["per_skill"]["drawer_open"]["stages"] = {
        "names": NAMES, "counts": counts, "reached": [c / episodes for c in counts]}
    path.write_text(json.dumps(record))
    return record


def test_compact_line_and_old_records(tmp_path):
    cell = write_cell(tmp_path, "q_transformer", "drawer_open", 0, {"drawer_open": (1, 10)})
    old = json.loads((cell / "eval.json").read_text())
    assert "no stage funnel" in funnel.compact(old) and "qtbench eval RUN_DIR" in funnel.compact(old)
    record = with_stages(cell, [9, 4, 2, 1])
    assert funnel.compact(record) == (
        "drawer_open (10 ep): reached_handle 90% > grasped_handle 40% > pulled_half 20% > open 10%")


def test_rows_pool_episodes_over_seeds_and_name_runs_without_funnels(tmp_path):
    records = []
    for seed, counts in ((0, [9, 4, 2, 1]), (1, [7, 6, 4, 3])):
        cell = write_cell(tmp_path, "q_transformer", "drawer_open", seed, {"drawer_open": (counts[-1], 10)})
        records.append(("drawer_open", "q_transformer", seed, with_stages(cell, counts)))
    old = json.loads((write_cell(tmp_path, "bc", "drawer_open", 0, {"drawer_open": (2, 10)}) / "eval.json").read_text())
    rows, missing = funnel.funnel_rows(records + [("drawer_open", "bc", 0, old)])
    assert len(rows) == 1 and missing == ["drawer_open/bc seed 0"]
    row = rows[0]
    assert (row.counts, row.episodes, row.seeds) == ((16, 10, 6, 4), 20, (0, 1))
    assert row.reached == (0.8, 0.5, 0.3, 0.2)
    text = funnel.funnel_markdown(records + [("drawer_open", "bc", 0, old)])
    assert "| task | algorithm | reached_handle | grasped_handle | pulled_half | open | episodes | seeds |" in text
    assert "| drawer_open | `q_transformer` | 80.0 | 50.0 | 30.0 | 20.0 | 20 | 0, 1 |" in text
    assert "drawer_open/bc seed 0" in text
    path = funnel.funnel_plot(records, tmp_path / "plots" / "funnels.png")
    assert path.stat().st_size > 1000
    assert funnel.funnel_plot([("drawer_open", "bc", 0, old)], tmp_path / "none.png") is None


def test_leaderboard_shows_funnels_and_still_reads_old_records(tmp_path):
    root = tmp_path / "results"
    with_stages(write_cell(root, "q_transformer", "drawer_open", 0, {"drawer_open": (1, 10)}), [9, 4, 2, 1])
    write_cell(root, "bc", "drawer_open", 0, {"drawer_open": (2, 10)})  # written before stages existed
    files = lb.write_leaderboard(root, tmp_path / "benchmarks.md")
    text = files.benchmarks.read_text()
    assert "### Stage funnels" in text and "| drawer_open | `q_transformer` | 90.0 | 40.0 | 20.0 | 10.0 | 10 | 0 |" in text
    assert "drawer_open/bc seed 0" in text  # named as lacking a funnel, and still on the leaderboard
    assert "| `bc` | 20.0 (1 seed) |" in text
    assert root / "plots" / "funnels.png" in files.plots


def with_closures(cell, failed: int, counts: list[int], median: float | None, axes: list[float] | None = None) -> dict:
    """Add the failed episodes' first closures to a cell's eval.json, as evaluation writes them
    (without ``axes``, as eval.json was written before the miss per axis was recorded)."""
    from qtbench.envs.attempts import CLOSURE_VERDICTS

    path = cell / "eval.json"
    record = json.loads(path.read_text())
    counts = dict(sorted(zip(CLOSURE_VERDICTS, counts)))  # keys sorted, as the results writer stores them
    closures = {"failed_episodes": failed, "counts": counts, "on_nothing_median_m": median}
    if axes is not None:
        closures["on_nothing_median_abs_offset_m"] = axes
    record["per_skill"]["drawer_open"]["first_closure"] = closures
    path.write_text(json.dumps(record))
    return record


def test_first_closures_in_the_run_summary_and_pooled_in_the_leaderboard(tmp_path):
    entries = []
    for seed, counts, median, axes in ((0, [2, 1, 5, 0], 0.05, [0.004, 0.03, 0.04]), (1, [4, 0, 3, 1], None, None)):
        cell = write_cell(tmp_path, "bc", "drawer_open", seed, {"drawer_open": (2, 10)})
        with_stages(cell, [9, 4, 2, 2])
        entries.append(("drawer_open", "bc", seed, with_closures(cell, 8, counts, median, axes)))
    assert funnel.compact(entries[0][3]).splitlines()[1] == (
        "  failed episodes (8) first closed the fingers: at the instructed target 25%, "
        "at another drawer or object 12%, on nothing 62% (median 5.0 cm away; per axis x 0.4, y 3.0, z 4.0 cm), "
        "never closed 0%")
    table = funnel.closure_table(entries)
    # 16 failed episodes pooled: 6 at the knob, 1 at another, 8 on nothing, 1 never closed
    assert ("| drawer_open | `bc` | drawer_open | 16 | 38 | 6 | 50 | 6 | 5.0 / – cm | x 0.4, y 3.0, z 4.0 cm / – "
            "| 0, 1 |") in table
    assert funnel.closure_table(entries[:0]) is None
    assert "first closed the fingers" in funnel.funnel_markdown(entries)


def test_endings_pooled_in_the_leaderboard(tmp_path):
    from qtbench.envs.attempts import HELD_AT_LIMIT, LET_GO_AFTER, ending_verdicts

    entries = []
    for seed, (dropped, slow) in ((0, (3, 1)), (1, (1, 3))):
        cell = write_cell(tmp_path, "bc", "move_near", seed, {"move_near": (6, 10)})
        record = json.loads((cell / "eval.json").read_text())
        counts = dict.fromkeys(ending_verdicts("move_near"), 0)
        counts.update({LET_GO_AFTER + "lifted": dropped, HELD_AT_LIMIT: slow})
        record["per_skill"]["move_near"]["how_failures_ended"] = {"failed_episodes": 4, "counts": counts}
        entries.append(("move_near", "bc", seed, record))
    table = funnel.ending_table(entries)
    # 8 failed episodes pooled: 4 dropped while carrying, 4 still held at the limit
    assert "| move_near | `bc` | 8 | 0 | 0 | 50 | 0 | 50 | 0, 1 |" in table
    assert table.startswith("`move_near`:") and "let go after near_target" in table
    assert funnel.ending_table(entries[:0]) is None
    assert "How the failed evaluation episodes of the object skills ended" in funnel.funnel_markdown(entries)


def test_attempted_styles_in_the_run_summary_and_pooled_in_the_leaderboard(tmp_path):
    entries = []
    for seed, (grasp, hook) in ((0, ((6, 4), (4, 1))), (1, ((2, 2), (8, 2)))):
        cell = write_cell(tmp_path, "dt", "drawer_open", seed, {"drawer_open": (grasp[1] + hook[1], 10)})
        record = with_stages(cell, [10, 8, 6, grasp[1] + hook[1]])
        record["per_skill"]["drawer_open"]["per_attempted_style"] = {
            "grasp": {"attempts": grasp[0], "successes": grasp[1], "success_rate": grasp[1] / grasp[0]},
            "hook": {"attempts": hook[0], "successes": hook[1], "success_rate": hook[1] / hook[0]}}
        entries.append(("drawer_open", "dt", seed, record))
    assert funnel.compact(entries[0][3]).splitlines()[-1] == (
        "  success per demonstrator style attempted: grasp 67% of 6, hook 25% of 4")
    table = funnel.style_table(entries)
    # pooled over the two seeds: grasp 8 of 20 episodes, 6 successes; hook 12 of 20, 3 successes
    assert "| drawer_open | `dt` | drawer_open | grasp | 40 | 75 [41, 93] | 8 | 0, 1 |" in table
    assert "| drawer_open | `dt` | drawer_open | hook | 60 | 25 [9, 53] | 12 | 0, 1 |" in table
    assert funnel.style_table([]) is None
    assert "demonstrator style the evaluation episodes attempted" in funnel.funnel_markdown(entries)
