"""Leaderboard: aggregation math on hand-made eval.json fixtures, markdown, CSV and plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from qtbench import leaderboard as lb
from qtbench.errors import QtbenchError

T_975_DF2 = 4.302653  # Student t 97.5% quantile, 2 degrees of freedom (statistical tables)


def write_cell(root: Path, algo: str, task: str, seed: int, skills: dict[str, tuple[int, int]],
               label_dir: str | None = None, steps: int = 1000, curve: list[float] = ()) -> Path:
    """A results cell like the training loop writes: config.json, metrics.csv, eval.json
    (with ``curve``: success rates of learning-curve points evenly spaced up to ``steps``)."""
    base = root / "ablations" / label_dir if label_dir else root
    out = base / task / algo / f"seed{seed}"
    out.mkdir(parents=True)
    successes = sum(s for s, _ in skills.values())
    episodes = sum(e for _, e in skills.values())
    record = {
        "algo": algo, "task": task, "seed": seed, "profile": "default", "train_steps": steps,
        "train_seconds": 120.0, "eval_seconds": 10.0, "machine": "test box", "qtbench_version": "0.1.0",
        "success_rate": successes / episodes, "ci95": [0.0, 1.0], "episodes": episodes,
        "per_skill": {k: {"success_rate": s / e, "ci95": [0.0, 1.0], "episodes": e, "successes": s}
                      for k, (s, e) in skills.items()},
        "per_instruction": {},
        "learning_curve": [{"step": steps * (i + 1) // len(curve), "train_seconds": 120.0 * (i + 1) / len(curve),
                            "success_rate": rate, "episodes": 10, "successes": round(10 * rate)}
                           for i, rate in enumerate(curve)],
    }
    (out / "eval.json").write_text(json.dumps(record))
    (out / "config.json").write_text(json.dumps({"algo": algo, "task": task, "seed": seed, "steps": steps,
                                                 "default_steps": 1000, "eval_episodes_per_instruction": 1,
                                                 "algo_config": {}}))
    (out / "metrics.csv").write_text("step,wall_seconds,loss\n50,1.0,0.9\n100,2.0,0.5\n150,3.0,0.4\n")
    return out


# Seeds of a multi-task run: (drawer_open, drawer_close, pick_place, move_near) successes.
QT_ALL = {0: (2, 1, 9, 21), 1: (3, 3, 12, 42), 2: (0, 0, 6, 21)}
EPISODES = (3, 3, 18, 42)


def _skills(successes: tuple[int, int, int, int]) -> dict[str, tuple[int, int]]:
    names = ("drawer_open", "drawer_close", "pick_place", "move_near")
    return {n: (s, e) for n, s, e in zip(names, successes, EPISODES)}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for seed, succ in QT_ALL.items():
        write_cell(root, "q_transformer", "all", seed, _skills(succ))
    write_cell(root, "bc", "all", 0, _skills((0, 0, 6, 14)))
    for seed, s in ((0, 2), (1, 4)):
        write_cell(root, "bc", "drawer_open", seed, {"drawer_open": (s, 10)}, curve=[0.1, s / 10])
        write_cell(root, "q_transformer", "drawer_open", seed, {"drawer_open": (s + 5, 10)}, curve=[0.2, (s + 5) / 10])
        write_cell(root, "q_transformer", "drawer_open", seed, {"drawer_open": (s + 1, 10)},
                   label_dir="q_transformer+no_conservative", steps=500)
    return root


def test_aggregate_hand_computed():
    agg = lb.aggregate([0.5, 2 / 3, 1 / 3], [0, 1, 2])
    assert agg.mean == pytest.approx(0.5)
    assert agg.std == pytest.approx(1 / 6)  # squared deviations 0 + 1/36 + 1/36, / (n - 1)
    half = T_975_DF2 * (1 / 6) / math.sqrt(3)
    assert agg.ci95 == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)
    wide = lb.aggregate([0.0, 1.0], [0, 1])  # t(1) = 12.706: the interval is clipped to [0, 1]
    assert wide.ci95 == (0.0, 1.0)
    single = lb.aggregate([0.25], [4])
    assert single.mean == 0.25 and math.isnan(single.std) and lb.fmt_pct(single) == "25.0 (1 seed)"


def test_joined_lists_seeds_in_numeric_order():
    import numpy as np

    assert lb._joined([10, 2, 9, 2]) == "2, 9, 10"  # not "10, 2, 9"
    assert lb._joined(np.array([10, 3])) == "3, 10"  # numpy integers (a frame's seed column) too
    assert lb._joined([3000, "", 500]) == "500, 3000, "  # text after the numbers


def test_category_rates_pool_skills():
    rates = lb.category_rates({"per_skill": {k: {"successes": s, "episodes": e} for k, (s, e) in
                                             _skills(QT_ALL[0]).items()}})
    # open and close pools (2 + 1) / (3 + 3); average is the mean of the three categories.
    assert rates == {"drawer pick and place": 0.5, "open and close drawer": 0.5,
                     "move object near target": 0.5, "average": 0.5}
    rates = lb.category_rates({"per_skill": {k: {"successes": s, "episodes": e} for k, (s, e) in
                                             _skills(QT_ALL[1]).items()}})
    assert rates["average"] == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_category_rates_from_per_instruction_only():
    record = {"per_instruction": {
        "open the top drawer": {"successes": 1, "episodes": 1},
        "close the top drawer": {"successes": 0, "episodes": 1},
        "place the red can into the top drawer": {"successes": 1, "episodes": 2},
        "move the red can near the orange": {"successes": 0, "episodes": 2},
    }}
    assert lb.category_rates(record) == {"drawer pick and place": 0.5, "open and close drawer": 0.5,
                                         "move object near target": 0.0, "average": 1 / 3}


def test_rows_labels_and_seeds(results):
    rows = {(r.task, r.label): r for r in lb.build_rows(lb.load_runs(results))}
    assert set(rows) == {("all", "q_transformer"), ("all", "bc"), ("drawer_open", "bc"),
                         ("drawer_open", "q_transformer"), ("drawer_open", "q_transformer+no_conservative")}
    qt = rows[("all", "q_transformer")]
    assert qt.columns["drawer pick and place"].values == pytest.approx((0.5, 2 / 3, 1 / 3))
    assert qt.columns["average"].values == pytest.approx((0.5, 8 / 9, 5 / 18))
    assert qt.columns["open and close drawer"].seeds == (0, 1, 2)
    bc = rows[("drawer_open", "bc")].columns[lb.OVERALL]
    assert bc.mean == pytest.approx(0.3) and bc.std == pytest.approx(math.sqrt(0.02))


def test_paired_differences_from_bc_by_hand(tmp_path):
    root = tmp_path / "results"
    for seed, (qt, bc) in enumerate([(3, 5), (4, 5), (2, 4)]):
        write_cell(root, "q_transformer", "drawer_open", seed, {"drawer_open": (qt, 10)})
        write_cell(root, "bc", "drawer_open", seed, {"drawer_open": (bc, 10)})
    write_cell(root, "q_transformer", "drawer_open", 3, {"drawer_open": (9, 10)})  # no bc at seed 3: unpaired
    text = lb.render_markdown(lb.load_runs(root))
    # differences -0.2, -0.1, -0.2: mean -1/6, sd 0.0577, half width t(0.975, 2) * sd / sqrt(3) = 0.1434
    half = T_975_DF2 * math.sqrt(1 / 300) / math.sqrt(3)
    assert f"| drawer_open | `q_transformer` | -16.7 [{100 * (-1 / 6 - half):+.1f}, {100 * (-1 / 6 + half):+.1f}] | 0, 1, 2 |" in text
    assert "| drawer_open | `bc` |" not in text.split("minus `bc`")[1].split("###")[0]


def test_run_with_overrides_outside_ablation_paths_is_a_variant(tmp_path):
    from dataclasses import asdict

    from qtbench.q_transformer import QTransformerConfig

    root = tmp_path / "results"
    cell = write_cell(root, "q_transformer", "all", 0, _skills((1, 1, 1, 1)))
    config = json.loads((cell / "config.json").read_text())
    config["algo_config"] = json.loads(json.dumps(asdict(QTransformerConfig(n_step=3))))
    (cell / "config.json").write_text(json.dumps(config))
    runs = lb.load_runs(root)
    assert [r.label for r in runs] == ["q_transformer+n_step3"]
    text = lb.render_markdown(runs)
    assert "listed as variants below" in text and "| all | `q_transformer+n_step3` |" in text


def test_markdown_csv_and_plots(results, tmp_path):
    bench = tmp_path / "benchmarks.md"
    bench.write_text("# qtbench benchmarks\n\n<!-- qtbench:env -->\nkeep me\n<!-- /qtbench:env -->\n")
    files = lb.write_leaderboard(results, bench)
    text = bench.read_text()
    assert "keep me" in text and "<!-- qtbench:leaderboard -->" in text
    header = "| algorithm | drawer pick and place | open and close drawer | move object near target | average | seeds |"
    assert header in text
    half = T_975_DF2 * (1 / 6) / math.sqrt(3)
    assert f"| `q_transformer` | 50.0 ± 16.7 [{100 * (0.5 - half):.1f}, {100 * (0.5 + half):.1f}] |" in text
    # The multi-task models per skill: drawer_open 2/3, 3/3, 0/3 and drawer_close 1/3, 3/3, 0/3 over seeds.
    assert "| `q_transformer` | 55.6 ± 50.9 [0.0, 100.0] | 44.4 ± 50.9 [0.0, 100.0] | 50.0 ± 16.7" in text
    assert "| Q-Transformer | `q_transformer` | 64 | 33 | 71 | 56 |" in text
    assert "| RT-1 | `bc` | 17 | 0 | 58 | 25 |" in text and "arXiv:2309.10150" in text
    assert "| `bc` | 30.0 ± 14.1 [0.0, 100.0] |" in text  # 2 seeds: t(1) = 12.706, interval clipped
    # ablation table: each row names its seeds (a variant on other seeds is not paired)
    assert "| drawer_open | `q_transformer+no_conservative` | 40.0 ± 14.1 [0.0, 100.0] | 0, 1 | 500 |" in text
    assert "| drawer_open | `q_transformer` | 80.0 ± 14.1 [0.0, 100.0] | 0, 1 | 1000 |" in text
    assert "- budget: 1000 gradient steps per run (the reference budget) (dataset profile default)" in text and "- machine: test box" in text
    assert "- seeds: 0, 1, 2 (1, 3 per row)" in text
    assert "### Learning curves" in text and "| drawer_open | `bc` | 500: 10 · 1000: 30 |" in text
    assert "- mean training time per run: 2.0 min" in text  # 120 s each
    assert "- budget: q_transformer 1000; q_transformer+no_conservative 500 gradient steps" in text

    rows = list(csv.DictReader(files.csv.open()))
    mean = [r for r in rows if r["task"] == "all" and r["algorithm"] == "q_transformer"
            and r["column"] == "drawer pick and place" and r["scope"] == "mean"]
    assert len(mean) == 1 and float(mean[0]["mean"]) == pytest.approx(0.5)
    assert float(mean[0]["ci95_hi"]) == pytest.approx(0.5 + half, abs=1e-5)
    single = [r for r in rows if r["task"] == "all" and r["algorithm"] == "bc" and r["column"] == "average"
              and r["scope"] == "mean"]
    assert float(single[0]["mean"]) == pytest.approx((6 / 18 + 0 / 6 + 14 / 42) / 3)
    assert single[0]["std"] == "" and single[0]["ci95_lo"] == ""  # one seed: no spread
    seed_rows = [r for r in rows if r["algorithm"] == "bc" and r["task"] == "drawer_open" and r["scope"] == "seed"]
    assert [(r["seeds"], r["successes"], r["episodes"]) for r in seed_rows] == [
        ("0", "2", "10"), ("1", "4", "10")]
    assert float(seed_rows[0]["ci95_lo"]) == pytest.approx(0.0567, abs=1e-4)  # Wilson 2/10

    names = sorted(p.name for p in files.plots)
    assert names == ["aggregates_all.png", "aggregates_single.png", "categories_all.png", "learning_curves_all.png",
                     "learning_curves_drawer_open.png", "performance_profile_all.png",
                     "performance_profile_single.png", "success_curves_drawer_open.png", "tasks.png"]
    for p in files.plots:
        assert p.parent == results / "plots" and p.stat().st_size > 1000
    assert "![categories_all](results/plots/categories_all.png)" in text  # linked from benchmarks.md


def test_aggregates_on_toy_results(results):
    aggregates = lb.compute_aggregates(lb.load_runs(results))
    single = {r.label: r for r in aggregates["single"]}
    assert set(single) == {"q_transformer", "bc"}  # the ablation variant is not a reference row
    qt = single["q_transformer"]
    assert qt.tasks == ("drawer_open",) and qt.seeds == (0, 1)
    # seeds 0.7 and 0.9: bootstrap means 0.7, 0.8 or 0.9 (chances 1/4, 1/2, 1/4)
    assert (qt.iqm.point, qt.iqm.lo, qt.iqm.hi) == pytest.approx((0.8, 0.7, 0.9))
    # every q_transformer run (0.7, 0.9) beats every bc run (0.2, 0.4), in every resample too
    assert (qt.improvement.point, qt.improvement.lo, qt.improvement.hi) == (1.0, 1.0, 1.0)
    assert single["bc"].improvement is None
    headline = {r.label: r for r in aggregates["all"]}
    assert headline["q_transformer"].tasks == ("drawer_open", "drawer_close", "pick_place", "move_near")
    assert headline["q_transformer"].scores.shape == (3, 4) and headline["bc"].scores.shape == (1, 4)
    assert not headline["bc"].iqm.has_interval  # one seed: nothing to resample
    text = lb.render_markdown(lb.load_runs(results))
    assert "| `q_transformer` | 80.0 [70.0, 90.0] | 80.0 [70.0, 90.0] | 1.00 [1.00, 1.00] | yes | 2 | drawer_open |" in text
    assert "| `bc` | 30.0 [20.0, 40.0] | 30.0 [20.0, 40.0] | – | – | 2 | drawer_open |" in text
    assert "no interval (needs 2+ seeds)" in text  # q_transformer vs bc's single seed on task all


def test_single_skill_aggregates_cover_the_tasks_every_algorithm_has(results):
    # bc alone on drawer_close (one seed): left out of every row, bc's included, so bc keeps
    # its two drawer_open seeds and the rows compare over the same task.
    write_cell(results, "bc", "drawer_close", 0, {"drawer_close": (10, 10)})
    single = {r.label: r for r in lb.compute_aggregates(lb.load_runs(results))["single"]}
    assert single["bc"].tasks == single["q_transformer"].tasks == ("drawer_open",)
    assert single["bc"].seeds == (0, 1) and single["bc"].iqm.point == pytest.approx(0.3)


def test_an_extra_algorithm_on_one_task_is_aggregated_there_and_narrows_no_other_row(results):
    """cql on drawer_open only, bc and q_transformer on drawer_open and drawer_close: each row
    covers the tasks it shares with bc (cql: drawer_open; the others both), and cql's
    probability of improvement pairs it with bc on drawer_open alone."""
    for seed, (qt, bc) in ((0, (6, 8)), (1, (7, 9))):
        write_cell(results, "q_transformer", "drawer_close", seed, {"drawer_close": (qt, 10)})
        write_cell(results, "bc", "drawer_close", seed, {"drawer_close": (bc, 10)})
    for seed, s in ((0, 1), (1, 3)):
        write_cell(results, "cql", "drawer_open", seed, {"drawer_open": (s, 10)})
    single = {r.label: r for r in lb.compute_aggregates(lb.load_runs(results))["single"]}
    assert single["q_transformer"].tasks == single["bc"].tasks == ("drawer_open", "drawer_close")
    assert single["cql"].tasks == ("drawer_open",) and single["cql"].scores.shape == (2, 1)
    # cql 0.1, 0.3 against bc 0.2, 0.4 on drawer_open: of the 4 pairs only 0.3 > 0.2 wins, so P(X > Y) = 0.25
    assert single["cql"].improvement.point == pytest.approx(0.25)


def test_underpowered_tasks_ask_an_extra_algorithm_only_where_it_runs(tmp_path):
    root = tmp_path / "results"
    for seed, wide in zip((2, 3, 4), (1, 5, 9)):
        for algo in ("q_transformer", "bc"):
            write_cell(root, algo, "drawer_open", seed, {"drawer_open": (5, 10)})
            write_cell(root, algo, "drawer_close", seed, {"drawer_close": (wide if algo == "bc" else 5, 10)})
        write_cell(root, "cql", "drawer_open", seed, {"drawer_open": (wide, 10)})
    wide = {u.task: u for u in lb.underpowered_tasks(lb.build_rows(lb.load_runs(root)), root)}
    assert wide["drawer_open"].algos == ("q_transformer", "bc", "cql")
    assert wide["drawer_close"].algos == ("q_transformer", "bc")  # cql (not a headline algorithm) is not there


def test_learning_curves_frame(results):
    runs = [r for r in lb.load_runs(results) if r.task == "drawer_open" and r.label == "bc"]
    frame = lb.curve_frame(runs)
    assert list(frame["step"]) == [500, 1000, 500, 1000] and list(frame["seed"]) == [0, 0, 1, 1]
    assert list(frame["success_rate"]) == pytest.approx([0.1, 0.2, 0.1, 0.4])
    row = next(r for r in lb.build_rows(runs))
    assert row.curve is row.curve  # built once per row, shared by the power check, table and plots
    assert row.curve.equals(frame)


@pytest.mark.parametrize("folder", ["tuning", "archive/scripted-failures-v0"])
def test_tuning_and_archived_runs_are_not_leaderboard_cells(results, folder):
    write_cell(results / folder / "iql", "iql", "drawer_open", 0, {"drawer_open": (1, 10)})
    assert not [r for r in lb.load_runs(results) if r.algo == "iql"]


def test_plots_do_not_import_the_leaderboard():
    import ast

    source = Path(lb.__file__).with_name("plots.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("qtbench") for m in imported)


def test_empty_results_dir_says_what_to_run(tmp_path):
    with pytest.raises(QtbenchError) as err:
        lb.write_leaderboard(tmp_path / "nothing", tmp_path / "b.md")
    assert "no eval.json" in str(err.value) and "qtbench sweep" in str(err.value)
    assert not (tmp_path / "b.md").exists()


def test_cli_leaderboard_is_quiet_about_bootstraps(results, tmp_path, capsys, caplog):
    import logging

    from qtbench.cli import main
    caplog.set_level(logging.INFO)
    bench = tmp_path / "benchmarks.md"
    assert main(["leaderboard", "--results-dir", str(results), "--benchmarks", str(bench), "--no-plots"]) == 0
    assert not [r for r in caplog.records if r.name == "absl" and r.levelno < 30]  # rliable's per-bootstrap INFO
    assert "runs ->" in capsys.readouterr().out


def test_curve_table_pools_seeds_per_step(results):
    rows = [r for r in lb.build_rows(lb.load_runs(results)) if r.label == r.algo]
    table = lb.curve_table(rows)
    # bc on drawer_open: seeds 0 and 1 at step 500 score 1/10 each, at 1000 2/10 and 4/10.
    # Last interval's gains 0.1 and 0.3: mean 0.2, std 0.1414, half-width t(1) 12.706 * 0.1414 / √2 = 1.271.
    assert ("| drawer_open | `bc` | 500: 10 · 1000: 30 | 1000 | +20.0 [-107.1, +147.1] | no change resolved "
            "| 20 | 0, 1 |") in table
    # q_transformer: 2/10 twice, then 7/10 and 9/10 (gains 0.5 and 0.7).
    assert ("| drawer_open | `q_transformer` | 500: 20 · 1000: 80 | 1000 | +60.0 [-67.1, +187.1] "
            "| no change resolved | 20 | 0, 1 |") in table
    assert "| all |" not in table  # the multi-task toy runs have no curve
    assert lb.curve_table([r for r in rows if r.task == "all"]) is None


def test_last_gain_pairs_the_last_two_points_by_seed():
    import pandas as pd

    frame = pd.DataFrame({"seed": [3, 3, 3, 4, 4, 4, 5, 5, 5, 6],
                          "step": [300, 100, 200, 100, 200, 300, 100, 200, 300, 100],  # seed 3 out of order
                          "success_rate": [0.5, 0.1, 0.3, 0.0, 0.2, 0.3, 0.2, 0.2, 0.4, 0.9]})
    gain = lb.last_gain(frame)  # seed 6 has one point: left out
    assert gain.seeds == (3, 4, 5) and gain.values == pytest.approx((0.2, 0.1, 0.2))
    # mean 1/6, std √(1/300) = 0.0577, half-width t(2) 4.303 * 0.0577 / √3 = 0.1434: [0.023, 0.310]
    assert gain.t_interval == pytest.approx((1 / 6 - 0.14343, 1 / 6 + 0.14343), abs=1e-4)
    assert lb.budget_verdict(gain) == lb.CLIMBING
    assert lb.budget_verdict(lb.aggregate([-0.2, -0.1, -0.2], [3, 4, 5])) == lb.FALLING
    assert lb.budget_verdict(lb.aggregate([0.2, -0.1, 0.0], [3, 4, 5])) == lb.UNRESOLVED


def test_underpowered_tasks_complete_the_seeds_then_add_two_for_every_algorithm(tmp_path):
    root = tmp_path / "results"
    for seed, qt in zip((2, 3, 4), (3, 6, 9)):  # 0.3, 0.6, 0.9: std 0.3, half-width t(2) * 0.3 / sqrt(3)
        write_cell(root, "q_transformer", "drawer_close", seed, {"drawer_close": (qt, 10)},
                   curve=[(qt - 2) / 10, qt / 10])  # +0.2 over the last interval on every seed: climbing
        write_cell(root, "bc", "drawer_close", seed, {"drawer_close": (8, 10)})  # no spread: narrow
        write_cell(root, "bc", "drawer_open", seed, {"drawer_open": (5, 10)})  # narrow and alone: fine
    for seed, s in ((2, 5), (3, 6)):  # seed 4, a comparison seed, missing
        write_cell(root, "bc", "pick_place", seed, {"pick_place": (s, 10)})
    wide = lb.underpowered_tasks(lb.build_rows(lb.load_runs(root)), root)
    assert [u.task for u in wide] == ["drawer_close", "pick_place"]
    close, pick = wide
    # at std 0.3, ±0.06 takes n with t(n-1) * 0.3 / sqrt(n) <= 0.06: 99 (t 1.98447 * 0.3 / sqrt(99)
    # = 0.05983), not 98 (t 1.98472 * 0.3 / sqrt(98) = 0.06015)
    assert close.cells == (("q_transformer", pytest.approx(T_975_DF2 * 0.3 / math.sqrt(3)), 99, lb.CLIMBING),)
    assert close.command == f"qtbench sweep --algos q_transformer bc --tasks drawer_close --seeds 5 6 --results-dir {root}"
    # 0.5, 0.6: std 0.1 / sqrt(2); t(1) 97.5% quantile 12.706 (statistical tables)
    # std 0.0707: 8 seeds (t(7) 2.36462 * 0.0707 / sqrt(8) = 0.0591; 7: t(6) 2.44691 -> 0.0654)
    assert pick.cells == (("bc", pytest.approx(12.706205 * (0.1 / math.sqrt(2)) / math.sqrt(2)), 8, None),)  # no curve
    # complete the comparison seeds, for every algorithm run on any skill, before adding any
    assert pick.seeds == (2, 3, 4) and pick.algos == ("q_transformer", "bc")
    text = lb.render_markdown(lb.load_runs(root), results_dir=root)
    assert (f"- drawer_close: `q_transformer` ±{100 * T_975_DF2 * 0.3 / math.sqrt(3):.1f} (99 seeds at this "
            f"spread; still climbing at its budget); `{close.command}`") in text
