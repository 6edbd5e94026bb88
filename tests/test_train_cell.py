"""One whole cell on the real environment and a small generated dataset: results layout,
determinism of eval.json, resume equivalence, atomicity on failure, and the CLI's exit codes.
Uses the tiny algorithm of test_train.py so the time goes to the pipeline, not to learning."""

from __future__ import annotations

import csv
import json

import pytest

from qtbench import checkpoint
from qtbench.algorithms import ALGORITHMS
from qtbench.cli import main
from qtbench.errors import QtbenchError
from qtbench.results import comparable_eval
from qtbench.train import RunSpec, run_cell

from test_train import Tiny


@pytest.fixture
def tiny(monkeypatch, small_datasets):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")


def spec(tmp_path, name: str, steps: int = 12, **kw) -> RunSpec:
    return RunSpec(algo="tiny", task="drawer_open", steps=steps, profile="small",
                   results_dir=tmp_path / name / "results", checkpoint_dir=tmp_path / name / "ckpt",
                   eval_episodes_per_instruction=1, log_every=5, checkpoint_every=10, progress=False, **kw)


def read(path):
    return json.loads(path.read_text())


def metric_rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in csv.DictReader(f)]


def test_cell_layout_and_identical_eval_on_rerun(tiny, tmp_path):
    out = run_cell(spec(tmp_path, "a", overrides={"hidden": "4"}))
    assert out == tmp_path / "a" / "results" / "drawer_open" / "tiny" / "seed0"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "eval.json", "metrics.csv"]
    config = read(out / "config.json")
    assert config["steps"] == 12 and config["eval_episodes_per_instruction"] == 1
    assert config["algo_config"]["hidden"] == 4 and config["algo_config"]["dataset"] == "mixed"
    record = read(out / "eval.json")
    assert record["train_steps"] == 12 and record["episodes"] == 3  # 3 drawers x 1 episode
    assert set(record["per_skill"]) == {"drawer_open"} and len(record["per_instruction"]) == 3
    assert {"train_seconds", "eval_seconds", "machine", "qtbench_version", "ci95"} <= set(record)
    again = run_cell(spec(tmp_path, "b", overrides={"hidden": "4"}))
    assert comparable_eval(read(again / "eval.json")) == comparable_eval(record)
    assert (tmp_path / "a" / "ckpt" / "drawer_open" / "tiny" / "seed0" / "last.pt").exists()


def test_resumed_cell_matches_uninterrupted(tiny, tmp_path):
    full = run_cell(spec(tmp_path, "full", steps=16))
    run_cell(spec(tmp_path, "split", steps=7))
    resumed = run_cell(spec(tmp_path, "split", steps=16, resume=True))
    assert comparable_eval(read(resumed / "eval.json")) == comparable_eval(read(full / "eval.json"))
    assert metric_rows(resumed / "metrics.csv") == metric_rows(full / "metrics.csv")
    a = checkpoint.load(tmp_path / "full" / "ckpt" / "drawer_open" / "tiny" / "seed0").algorithm["net"]
    b = checkpoint.load(tmp_path / "split" / "ckpt" / "drawer_open" / "tiny" / "seed0").algorithm["net"]
    assert all((a[k] == b[k]).all() for k in a)


def test_failed_run_leaves_no_eval_json(tiny, tmp_path):
    out = run_cell(spec(tmp_path, "a"))
    with pytest.raises(QtbenchError, match="steps 1-5"):  # the NaN of step 3, read at the log interval
        run_cell(spec(tmp_path, "a", overrides={"nan_at": "3"}))
    assert not (out / "eval.json").exists()  # the stale record of the earlier run is gone too


def test_cli_exit_codes_and_messages(tiny, tmp_path, capsys):
    base = ["run", "--task", "drawer_open", "--profile", "small", "--steps", "4", "--eval-episodes", "1",
            "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), "--no-progress"]
    assert main([*base, "--algo", "nope"]) == 2
    assert "unknown algorithm 'nope'" in capsys.readouterr().err
    assert main([*base, "--algo", "tiny", "--no-mc-return"]) == 2
    err = capsys.readouterr().err
    assert "no field 'mc_return'" in err and "hidden" in err
    assert main([*base, "--algo", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "| drawer_open | " in out and "autonomous collector" in out
    assert (tmp_path / "r" / "drawer_open" / "tiny" / "seed0" / "eval.json").exists()
