"""`qtbench tune`: declared settings, the search end to end on tiny budgets, the choice,
resuming, freezing, and what freezing changes for later runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import test_train
from qtbench import tuning
from qtbench.algorithms import ALGORITHMS
from qtbench.cli import main
from qtbench.errors import QtbenchError
from qtbench.sweep import Cell
from qtbench.train import RunSpec, reference_config, run_cell
from test_sweep import InlineExecutor
from test_train import Tiny

TINY_SETTINGS = [{"hidden": 4}, {"hidden": 6, "learning_rate": 0.05}, {"hidden": 16}]


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_declares_at_most_eight_valid_settings(algo):
    settings = tuning.tuning_settings(algo)  # typed against the config: unknown fields would raise
    assert 1 <= len(settings) <= tuning.MAX_SETTINGS
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == len(settings)


def test_the_committed_frozen_settings_are_each_a_declared_setting():
    """qtbench/tuned.json (written by `qtbench tune --freeze`) names, for each algorithm it
    covers, one of the settings the algorithm declares, typed as its config types it."""
    committed = json.loads(Path(tuning.__file__).with_name("tuned.json").read_text())
    for algo, entry in committed.items():
        assert entry["settings"] in tuning.tuning_settings(algo), algo
        assert entry["task"] == tuning.TUNING_TASK and entry["seeds"] == list(tuning.TUNING_SEEDS)


def test_the_first_setting_is_the_papers_sparse_reward_recipe():
    assert tuning.tuning_settings("iql")[0] == {"reward_shift": -1.0, "expectile": 0.9, "beta": 10.0}
    assert tuning.tuning_settings("cql")[0] == {"reward_scale": 4.0, "reward_shift": -2.0, "cql_alpha": 5.0,
                                                "learning_rate": 3e-4}
    assert tuning.tuning_settings("dt")[0] == {"history": 20, "learning_rate": 1e-4, "dropout": 0.1}


@pytest.fixture
def tiny(monkeypatch, small_datasets, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")
    monkeypatch.setattr(test_train, "TUNING_SETTINGS", TINY_SETTINGS, raising=False)
    monkeypatch.setattr(tuning, "TUNED_FILE", tmp_path / "tuned.json")


def _search(tmp_path, **kw):
    return tuning.search_config("tiny", tmp_path / "results", tmp_path / "ckpt", steps=6, profile="small",
                                eval_episodes_per_instruction=1, **kw)


def test_search_end_to_end_resumes_and_freezes(tiny, tmp_path):
    bench = tmp_path / "benchmarks.md"
    config = _search(tmp_path)
    outcomes, summary = tuning.run_search(config, InlineExecutor(), bench)
    assert [o.status for o in outcomes] == ["done"] * 6  # 3 settings x seeds 0, 1
    assert (tmp_path / "results" / "tuning" / "tiny" / "ablations" / "tiny+hidden4" / "drawer_open" / "tiny"
            / "seed1" / "eval.json").is_file()
    stored = json.loads((tmp_path / "results" / "tuning" / "tiny" / "tuning.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    assert [s["setting"] for s in summary["settings"]] == TINY_SETTINGS
    assert all(set(s["seeds"]) == {"0", "1"} and s["mean"] is not None for s in summary["settings"])
    means = [s["mean"] for s in summary["settings"]]
    assert summary["chosen"] == means.index(max(means))  # the first of the best (ties: the earlier)
    assert summary["steps"] == [6] and summary["task"] == "drawer_open"
    text = bench.read_text()
    assert "<!-- qtbench:tuning-tiny -->" in text and "**chosen**" in text and "not frozen yet" in text

    # resumable: a second call finds every cell finished and runs nothing
    again, _ = tuning.run_search(config, InlineExecutor(), bench)
    assert {o.status for o in again} == {"skipped"}

    # freezing: later runs of the algorithm start from the chosen setting, on every task
    chosen = TINY_SETTINGS[summary["chosen"]]
    tuning.freeze("tiny", summary)
    assert tuning.reference_overrides("tiny") == chosen
    assert reference_config("tiny").hidden == chosen["hidden"]
    assert reference_config("tiny", {"hidden": 3}).hidden == 3  # --set still wins
    out = run_cell(RunSpec(algo="tiny", task="drawer_open", steps=2, profile="small", results_dir=tmp_path / "after",
                           checkpoint_dir=tmp_path / "after-ckpt", eval_episodes_per_instruction=1, progress=False,
                           curve_points=0))
    assert json.loads((out / "config.json").read_text())["algo_config"]["hidden"] == chosen["hidden"]
    from qtbench.reproduce import config_overrides

    assert config_overrides("tiny", json.loads((out / "config.json").read_text())["algo_config"]) == {}
    tuning.write_tuning_section(summary, bench)
    assert "frozen in `qtbench/tuned.json`" in bench.read_text()


class InterruptedAfterOne(InlineExecutor):
    """Runs the first job, then is interrupted (Ctrl-C, or SIGTERM to the sweep)."""

    def run(self, jobs, cell_fn):
        yield from super().run(jobs[:1], cell_fn)
        raise KeyboardInterrupt


def test_an_interrupted_search_writes_what_it_finished_and_stale_cells_do_not_count(tiny, tmp_path):
    bench = tmp_path / "benchmarks.md"
    config = _search(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        tuning.run_search(config, InterruptedAfterOne(), bench)
    stored = json.loads((tmp_path / "results" / "tuning" / "tiny" / "tuning.json").read_text())
    assert [sorted(s["seeds"]) for s in stored["settings"]] == [["0"], [], []] and stored["chosen"] is None
    assert "not run yet" in bench.read_text() and "The search is not finished" in bench.read_text()

    # the finished cell, made with another value of its setting than the search gives it now
    cell_config = (Cell("tiny", "drawer_open", 0, (("hidden", 4),)).results_dir(config.results_dir)
                   / "config.json")
    record = json.loads(cell_config.read_text())
    record["algo_config"]["hidden"] = 5
    cell_config.write_text(json.dumps(record))
    summary = tuning.summarise(config)
    assert summary["settings"][0]["seeds"] == {} and summary["settings"][0]["stale"] == [0]
    assert "| 0 | `hidden=4` | made with other settings or data: runs again | not run yet |" in (
        tuning.render_section(summary, {}))


def test_after_freezing_the_search_keeps_its_cells_and_reference_cells_run_again(tiny, tmp_path):
    """The search's cells start from the recipe whatever is frozen, so a frozen search still
    finds them finished; a reference cell finished before the freeze, or a checkpoint saved
    before it, ran with other settings than the cell's now, so a sweep runs it again."""
    from qtbench.sweep import SweepConfig, make_jobs, plan_status, run_sweep

    search = _search(tmp_path, seeds=(0,))
    tuning.run_search(search, InlineExecutor(), tmp_path / "benchmarks.md")
    reference = SweepConfig(algos=["tiny"], tasks=["drawer_open"], seeds=[0], steps=6, profile="small",
                            eval_episodes_per_instruction=1, results_dir=tmp_path / "ref",
                            checkpoint_dir=tmp_path / "ref-ckpt")
    run_sweep(reference, InlineExecutor())

    tuning.TUNED_FILE.write_text(json.dumps({"tiny": {"settings": {"hidden": 16}}}))  # frozen since
    assert {state for _, state in plan_status(search)} == {"finished: skip"}
    assert make_jobs(search, 1, False)[0] == []
    assert [state for _, state in plan_status(reference)] == [
        "run from scratch: finished with other settings (hidden 8 (now 16))"]
    (Cell("tiny", "drawer_open", 0).results_dir(reference.results_dir) / "eval.json").unlink()  # as if interrupted
    assert [state for _, state in plan_status(reference)] == [
        "run from scratch: its checkpoint was made with other settings (hidden 8 (now 16))"]
    [job] = make_jobs(reference, 1, False)[0]
    assert not job.resume and job.tuned and not make_jobs(search, 1, False)[0]


def test_a_search_cells_printed_resume_command_starts_from_the_recipe():
    from qtbench.cli import build_parser
    from qtbench.sweep import CellJob

    job = CellJob(Cell("bc", "drawer_open", 0, (("learning_rate", 1e-4),)), Path("r/tuning/bc"), Path("c/tuning/bc"),
                  tuned=False)
    args = build_parser().parse_args(shlex.split(job.run_spec().resume_command())[1:])
    assert args.untuned and args.overrides == ["learning_rate=0.0001"] and args.results_dir == Path("r/tuning/bc")
    assert not build_parser().parse_args(["run", "--algo", "bc", "--task", "drawer_open"]).untuned


def test_choice_is_the_best_mean_and_ties_go_to_the_earlier_setting(tiny, tmp_path):
    config = _search(tmp_path)
    rates = {0: (0.2, 0.4), 1: (0.5, 0.3), 2: (0.4, 0.4)}  # means 0.3, 0.4, 0.4: setting 1 wins the tie
    for index, setting in enumerate(TINY_SETTINGS):
        for seed, rate in zip((0, 1), rates[index]):
            out = Cell("tiny", "drawer_open", seed, tuple(sorted(setting.items()))).results_dir(config.results_dir)
            out.mkdir(parents=True)
            (out / "eval.json").write_text(json.dumps({"success_rate": rate, "ci95": [rate - 0.1, rate + 0.1],
                                                       "episodes": 10, "train_steps": 6, "machine": "box"}))
    summary = tuning.summarise(config)
    assert [s["mean"] for s in summary["settings"]] == pytest.approx([0.3, 0.4, 0.4])
    assert summary["chosen"] == 1 and summary["machines"] == ["box"]
    text = tuning.render_section(summary, {})
    assert "| 1 | `hidden=6, learning_rate=0.05` | 50.0 [40.0, 60.0] (10 ep) | 30.0 [20.0, 40.0] (10 ep) | 40.0 | **chosen** |" in text
    assert "| 0 | `hidden=4` | 20.0 [10.0, 30.0] (10 ep) | 40.0 [30.0, 50.0] (10 ep) | 30.0 | recipe |" in text


def test_unfinished_search_cannot_be_frozen(tiny, tmp_path):
    summary = tuning.summarise(_search(tmp_path))
    assert summary["chosen"] is None and all(s["mean"] is None for s in summary["settings"])
    assert "not run yet" in tuning.render_section(summary, {})
    with pytest.raises(QtbenchError, match="not finished.*6 cells to go"):
        tuning.freeze("tiny", summary)
    assert not tuning.TUNED_FILE.exists()


def test_more_than_eight_settings_is_refused(tiny, monkeypatch):
    monkeypatch.setattr(test_train, "TUNING_SETTINGS", [{"hidden": h} for h in range(1, 10)])
    with pytest.raises(QtbenchError, match="9 tuning settings, more than the rule's 8"):
        tuning.tuning_settings("tiny")


def test_cli_dry_run_lists_the_cells(tiny, tmp_path, capsys):
    assert main(["tune", "--algo", "tiny", "--dry-run", "--results-dir", str(tmp_path / "r"),
                 "--checkpoint-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "tiny+hidden16" in out and "6 cells, 6 to run" in out


def test_cli_freeze_prints_the_section_as_benchmarks_md_has_it(tiny, tmp_path, capsys, monkeypatch):
    """With --freeze the printed section says frozen, as the one written to benchmarks.md does
    (it once printed "not frozen yet" above the line saying it froze)."""
    monkeypatch.setattr("qtbench.cli.tune.LocalExecutor", lambda workers: InlineExecutor())  # tiny is in-process
    bench = tmp_path / "benchmarks.md"
    assert main(["tune", "--algo", "tiny", "--freeze", "--steps", "6", "--profile", "small", "--eval-episodes", "1",
                 "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"),
                 "--benchmarks", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "not frozen yet" not in out and "frozen in `qtbench/tuned.json`" in out and "\nfroze tiny+" in out
    assert "frozen in `qtbench/tuned.json`" in bench.read_text() and tuning.TUNED_FILE.is_file()


def test_a_frozen_bc_setting_changes_the_bc_row_but_not_the_collection_policy(tmp_path, monkeypatch):
    """The collection policy trains with bc's class defaults, so freezing BC's choice never
    changes the datasets every search and comparison ran on."""
    from qtbench.collection_policy import collection_config

    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"bc": {"settings": {"learning_rate": 1e-5}}}))
    monkeypatch.setattr(tuning, "TUNED_FILE", tuned)
    assert reference_config("bc").learning_rate == 1e-5
    assert collection_config().learning_rate != 1e-5


def test_comparisons_default_to_three_seeds_the_choice_was_not_made_on():
    from qtbench.cli import build_parser
    from qtbench.sweep import SweepConfig

    assert SweepConfig().seeds == build_parser().parse_args(["sweep"]).seeds == [2, 3, 4]
    assert not set(tuning.COMPARISON_SEEDS) & set(tuning.TUNING_SEEDS)
