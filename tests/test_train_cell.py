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
    """The rows of a csv file without its timing columns."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in csv.DictReader(f)]


def test_cell_layout_and_identical_eval_on_rerun(tiny, tmp_path):
    out = run_cell(spec(tmp_path, "a", overrides={"hidden": "4"}))
    assert out == tmp_path / "a" / "results" / "drawer_open" / "tiny" / "seed0"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "curve.csv", "eval.json", "metrics.csv"]
    config = read(out / "config.json")
    assert config["steps"] == 12 and config["eval_episodes_per_instruction"] == 1
    assert config["algo_config"]["hidden"] == 4 and config["algo_config"]["dataset"] == "mixed"
    record = read(out / "eval.json")
    assert record["train_steps"] == 12 and record["episodes"] == 3  # 3 drawers x 1 episode
    assert set(record["per_skill"]) == {"drawer_open"} and len(record["per_instruction"]) == 3
    assert {"train_seconds", "eval_seconds", "machine", "qtbench_version", "ci95"} <= set(record)
    assert all(len(row["ci95"]) == 2 for row in record["per_instruction"].values())
    # the learning curve: 5 points, each on the first episode per instruction (all the final eval has here)
    assert [p["step"] for p in record["learning_curve"]] == [2, 5, 7, 10, 12]
    assert {p["episodes"] for p in record["learning_curve"]} == {3}
    assert config["curve_points"] == 5 and config["curve_episodes_per_instruction"] == 1
    again = run_cell(spec(tmp_path, "b", overrides={"hidden": "4"}))
    assert comparable_eval(read(again / "eval.json")) == comparable_eval(record)
    assert (tmp_path / "a" / "ckpt" / "drawer_open" / "tiny" / "seed0" / "last.pt").exists()


def test_resumed_cell_matches_uninterrupted(tiny, tmp_path):
    full = run_cell(spec(tmp_path, "full", steps=16))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after update 7, past the first curve point (3)
        run_cell(spec(tmp_path, "split", steps=16, overrides={"interrupt_at": "7"}))
    resumed = run_cell(spec(tmp_path, "split", steps=16, resume=True, overrides={"interrupt_at": "7"}))
    # the same success numbers, per-instruction intervals and learning curve (timing aside)
    assert comparable_eval(read(resumed / "eval.json")) == comparable_eval(read(full / "eval.json"))
    assert [p["step"] for p in read(resumed / "eval.json")["learning_curve"]] == [3, 6, 10, 13, 16]
    assert metric_rows(resumed / "metrics.csv") == metric_rows(full / "metrics.csv")
    assert metric_rows(resumed / "curve.csv") == metric_rows(full / "curve.csv")
    a = checkpoint.load(tmp_path / "full" / "ckpt" / "drawer_open" / "tiny" / "seed0").algorithm["net"]
    b = checkpoint.load(tmp_path / "split" / "ckpt" / "drawer_open" / "tiny" / "seed0").algorithm["net"]
    assert all((a[k] == b[k]).all() for k in a)


def test_failed_run_leaves_no_eval_json(tiny, tmp_path):
    out = run_cell(spec(tmp_path, "a"))
    with pytest.raises(QtbenchError, match="steps 1-5"):
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
    assert "| open the top drawer | 0/1 |" in out or "| open the top drawer | 1/1 |" in out  # per instruction
    assert "learning curve" in out and "| 4 | " in out  # the curve's last point, at the final step
    assert "stage funnel" in out and "drawer_open (3 ep): reached_handle " in out
    assert (tmp_path / "r" / "drawer_open" / "tiny" / "seed2" / "eval.json").exists()


def test_a_run_failing_before_its_first_checkpoint_leaves_no_cell(tiny, tmp_path, capsys):
    base = ["run", "--algo", "tiny", "--task", "drawer_open", "--profile", "small", "--no-progress",
            "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c")]
    assert main([*base, "--set", "nan_at=2"]) == 2
    assert "training diverged" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # no cell holding only a config.json, no empty folders
    # a run that reached a checkpoint keeps its cell (without eval.json) so --resume can finish it
    assert main([*base, "--set", "nan_at=12", "--steps", "20", "--checkpoint-every", "10"]) == 2
    cell = tmp_path / "r" / "ablations" / "tiny+nan_at12" / "drawer_open" / "tiny" / "seed2"
    assert sorted(p.name for p in cell.iterdir()) == ["config.json", "curve.csv", "metrics.csv"]


def test_printed_resume_command_resumes_exactly_the_interrupted_run(tiny, tmp_path, caplog):
    import shlex
    import signal

    caplog.set_level("INFO")
    handler = signal.getsignal(signal.SIGTERM)
    argv = ["run", "--algo", "tiny", "--task", "drawer_open", "--profile", "small", "--steps", "12",
            "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), "--no-progress",
            "--no-conservative", "--set", "hidden=4", "interrupt_at=5", "interrupt_signal=SIGTERM",
            "--eval-episodes", "2", "--checkpoint-every", "3", "--checkpoint-seconds", "0"]
    try:
        assert main(argv) == 130  # SIGTERM at update 5: checkpoint, print the resume command, stop
        printed = [r.getMessage().split("resume with: ")[1] for r in caplog.records if "resume with:" in r.getMessage()]
        caplog.clear()
        resume = shlex.split(printed[0])
        assert resume[:2] == ["qtbench", "run"]
        assert main(resume[1:]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert "at step 5" in caplog.text and "resuming from" in caplog.text  # resumed, not retrained
    root = tmp_path / "r" / "ablations" / "tiny+no_conservative+hidden4+interrupt_at5+interrupt_signalSIGTERM"
    record = read(root / "drawer_open" / "tiny" / "seed2" / "eval.json")
    assert record["train_steps"] == 12 and record["episodes"] == 6  # --eval-episodes 2 kept
    assert not (root / "ablations").exists()  # the ablation folder is not applied twice
    config = read(root / "drawer_open" / "tiny" / "seed2" / "config.json")
    assert (config["checkpoint_every"], config["checkpoint_seconds"]) == (3, 0.0)
    assert config["algo_config"]["conservative"] is False and config["algo_config"]["hidden"] == 4


def test_kill_9_loses_at_most_the_checkpoint_interval(tiny, small_datasets, tmp_path, caplog):
    """A 400-step run checkpointing by time only (every 0.5 s) is killed with SIGKILL; the
    checkpoint it left is recent, and --resume continues from it to the end."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    argv = ["run", "--algo", "tiny", "--task", "drawer_open", "--profile", "small", "--steps", "400",
            "--eval-episodes", "1", "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"),
            "--no-progress", "--checkpoint-every", "1000", "--checkpoint-seconds", "0.5", "--set", "sleep=0.01"]
    script = ("import sys; from qtbench.algorithms import ALGORITHMS; from qtbench.cli import main; "
              "ALGORITHMS['tiny'] = 'test_train:Tiny'; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(small_datasets),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    ckpt_dir = tmp_path / "c" / "ablations" / "tiny+sleep0.01" / "drawer_open" / "tiny" / "seed2"
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + 120, []
        while time.monotonic() < deadline and proc.poll() is None:
            state = checkpoint.load(ckpt_dir) if (ckpt_dir / "last.pt").exists() else None
            if state is not None and state.step not in seen:
                seen.append(state.step)
            if len(seen) >= 2:  # two checkpoints by time, far from any multiple of 1000 steps
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert len(seen) >= 2 and 0 < seen[0] < seen[1] < 400, seen
    # at >= 0.01 s per update, consecutive time checkpoints 0.5 s apart are <= ~51 steps apart
    assert seen[1] - seen[0] <= 52
    killed_at = checkpoint.load(ckpt_dir).step
    caplog.set_level("INFO")
    assert main(argv + ["--resume"]) == 0
    assert f"at step {killed_at}" in caplog.text
    results = tmp_path / "r" / "ablations" / "tiny+sleep0.01" / "drawer_open" / "tiny" / "seed2"
    assert read(results / "eval.json")["train_steps"] == 400
