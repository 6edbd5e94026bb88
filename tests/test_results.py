"""Results records: Wilson intervals, eval.json success fields, metrics.csv, summary table."""

from __future__ import annotations

import csv
import io

import pytest

from qtbench.results import (
    EpisodeOutcome,
    MetricsLog,
    cell_dir,
    comparable_eval,
    success_summary,
    summary_table,
    wilson_interval,
)


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (0, 10, 0.0, 0.27754),  # textbook values of the 95% Wilson interval
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72246, 1.0),
        (1, 4, 0.04559, 0.69936),
    ],
)
def test_wilson_interval_matches_hand_computed(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_interval_without_trials_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_success_summary_counts_per_skill_and_instruction():
    outcomes = [
        EpisodeOutcome("open the top drawer", "drawer_open", True),
        EpisodeOutcome("open the top drawer", "drawer_open", False),
        EpisodeOutcome("open the middle drawer", "drawer_open", True),
        EpisodeOutcome("close the top drawer", "drawer_close", False),
    ]
    s = success_summary(outcomes)
    assert s["success_rate"] == 0.5 and s["episodes"] == 4
    assert s["ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    assert s["per_skill"]["drawer_open"] == {
        "episodes": 3, "successes": 2, "success_rate": pytest.approx(2 / 3), "ci95": list(wilson_interval(2, 3)),
    }
    assert s["per_skill"]["drawer_close"]["success_rate"] == 0.0
    assert s["per_instruction"]["open the top drawer"] == {
        "episodes": 2, "successes": 1, "success_rate": 0.5, "ci95": list(wilson_interval(1, 2))}
    assert list(s["per_skill"]) == ["drawer_close", "drawer_open"]  # sorted: stable JSON


def test_comparable_eval_drops_only_timing_fields():
    record = {"algo": "bc", "success_rate": 0.5, "train_seconds": 3.0, "eval_seconds": 1.0, "machine": "x"}
    assert comparable_eval(record) == {"algo": "bc", "success_rate": 0.5}
    curve = {"learning_curve": [{"step": 5, "success_rate": 0.25, "train_seconds": 2.0, "eval_seconds": 0.5}]}
    assert comparable_eval(curve) == {"learning_curve": [{"step": 5, "success_rate": 0.25}]}


def test_cell_dir_layout(tmp_path):
    assert cell_dir(tmp_path, "drawer_open", "bc", 3) == tmp_path / "drawer_open" / "bc" / "seed3"


def test_metrics_log_columns_and_atomic_write(tmp_path):
    log = MetricsLog()
    log.append({"step": 10, "wall_seconds": 1.5, "loss": 0.25, "td": 0.1})
    log.append({"step": 20, "wall_seconds": 3.0, "loss": 0.125, "td": 0.05, "reg": 0.2})
    path = log.write(tmp_path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(rows[0]) == ["step", "wall_seconds", "loss", "td", "reg"]
    assert [r["step"] for r in rows] == ["10", "20"]
    assert float(rows[1]["loss"]) == 0.125 and rows[0]["reg"] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temp file left


def test_summary_table_lists_skills_overall_and_collector():
    outcomes = [EpisodeOutcome("open the top drawer", "drawer_open", i < 7) for i in range(10)]
    record = {"algo": "q_transformer", "task": "drawer_open", "seed": 0, "train_steps": 100,
              "train_seconds": 12.0, "eval_seconds": 3.0, **success_summary(outcomes)}
    text = summary_table(record, collector_rate=0.25)
    assert "| drawer_open | 7/10 | 70.0% | [39.7%, 89.2%] |" in text
    assert "| **overall** | 7/10 | 70.0% |" in text
    assert "autonomous collector of the failures" in text and "25.0%" in text


def test_stage_funnels_per_skill_and_instruction():
    from qtbench.results import handover_summary, stage_funnel

    def out(text, skill, furthest, success=False, handover=None):
        return EpisodeOutcome(text, skill, success, furthest_stage=furthest, handover_step=handover)

    top, mid = "open the top drawer", "open the middle drawer"
    outcomes = [out(top, "drawer_open", "none"), out(top, "drawer_open", "grasped_handle"),
                out(mid, "drawer_open", "open", True), out(mid, "drawer_open", "reached_handle")]
    funnel = stage_funnel(outcomes)
    assert funnel == {"names": ["reached_handle", "grasped_handle", "pulled_half", "open"],
                      "counts": [3, 2, 1, 1], "reached": [0.75, 0.5, 0.25, 0.25]}
    s = success_summary(outcomes)
    assert s["per_skill"]["drawer_open"]["stages"] == funnel
    assert s["per_instruction"][top]["furthest_stage"] == ["none", "grasped_handle"]  # in evaluation order
    assert s["per_instruction"][top]["stages"]["counts"] == [1, 1, 0, 0]
    # Outcomes without stages (other environments) keep the old fields only.
    assert "stages" not in success_summary([EpisodeOutcome(top, "drawer_open", True)])["per_skill"]["drawer_open"]

    handed = [out(top, "drawer_open", "open", True, 5), out(top, "drawer_open", "pulled_half", False, 7),
              out(mid, "drawer_open", "reached_handle"), out(mid, "drawer_open", "open", True)]
    h = handover_summary(handed, "grasped_handle")
    assert (h["episodes_total"], h["episodes"], h["demo_never_reached"], h["demo_finished_first"]) == (4, 2, 1, 1)
    assert h["per_skill"]["drawer_open"]["successes"] == 1
    assert h["success_rate"] == 0.5 and h["ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert h["mean_handover_step"] == 6.0 and h["from_stage"] == "grasped_handle"


def test_closure_summary_counts_failed_episodes_only():
    from qtbench.envs.attempts import AT_OTHER, AT_TARGET, NEVER_CLOSED, ON_NOTHING
    from qtbench.results import closure_summary

    def out(success, verdict, distance=None):  # a miss straight in front of the knob (-y)
        return EpisodeOutcome("open the top drawer", "drawer_open", success, first_closure=verdict,
                              closure_offset=None if distance is None else (0.0, -distance, 0.0))

    outcomes = [out(True, AT_TARGET, 0.01), out(False, AT_TARGET, 0.02), out(False, ON_NOTHING, 0.04),
                out(False, ON_NOTHING, 0.10), out(False, AT_OTHER, 0.2), out(False, NEVER_CLOSED)]
    summary = closure_summary(outcomes)
    assert summary == {"failed_episodes": 5,
                       "counts": {AT_TARGET: 1, AT_OTHER: 1, ON_NOTHING: 2, NEVER_CLOSED: 1},
                       "on_nothing_median_m": pytest.approx(0.07),
                       "on_nothing_median_abs_offset_m": pytest.approx([0.0, 0.07, 0.0])}
    assert list(summary["counts"]) == [AT_TARGET, AT_OTHER, ON_NOTHING, NEVER_CLOSED]  # report order
    assert closure_summary([out(False, ON_NOTHING, 0.03)])["on_nothing_median_m"] == pytest.approx(0.03)
    assert closure_summary([out(True, AT_TARGET, 0.0)]) is None  # no failure
    assert closure_summary([EpisodeOutcome("close the top drawer", "drawer_close", False)]) is None  # pushes
    assert success_summary(outcomes)["per_skill"]["drawer_open"]["first_closure"] == summary
    assert "first_closure" not in success_summary(outcomes)["per_instruction"]["open the top drawer"]


def test_style_summary_tallies_attempts_and_successes_per_style():
    from qtbench.results import style_summary

    def out(success, style):
        return EpisodeOutcome("open the top drawer", "drawer_open", success, attempted_style=style)

    outcomes = [out(True, "grasp"), out(False, "grasp"), out(True, "grasp"), out(False, "hook"), out(False, "none")]
    assert style_summary(outcomes) == {
        "grasp": {"attempts": 3, "successes": 2, "success_rate": pytest.approx(2 / 3)},
        "none": {"attempts": 1, "successes": 0, "success_rate": 0.0},
        "hook": {"attempts": 1, "successes": 0, "success_rate": 0.0}}
    assert style_summary([EpisodeOutcome("open the top drawer", "drawer_open", True)]) is None  # not scored
    summary = success_summary(outcomes)
    assert summary["per_skill"]["drawer_open"]["per_attempted_style"] == style_summary(outcomes)
    assert "per_attempted_style" not in summary["per_instruction"]["open the top drawer"]


def test_ending_summary_counts_failed_object_episodes_only():
    from qtbench.envs.attempts import HELD_AT_LIMIT, LET_GO_AFTER
    from qtbench.results import ending_summary

    text = "move the green apple near the orange"

    def out(success, ending):
        return EpisodeOutcome(text, "move_near", success, ending=ending)

    outcomes = [out(True, None), out(False, HELD_AT_LIMIT), out(False, LET_GO_AFTER + "lifted"),
                out(False, LET_GO_AFTER + "lifted")]
    summary = ending_summary(outcomes)
    assert summary["failed_episodes"] == 3
    assert summary["counts"][LET_GO_AFTER + "lifted"] == 2 and summary["counts"][HELD_AT_LIMIT] == 1
    assert ending_summary([out(True, None)]) is None  # no failure
    assert ending_summary([EpisodeOutcome("open the top drawer", "drawer_open", False)]) is None
    assert success_summary(outcomes)["per_skill"]["move_near"]["how_failures_ended"] == summary
    assert "how_failures_ended" not in success_summary(outcomes)["per_instruction"][text]
