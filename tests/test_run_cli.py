"""`qtbench run`: flags -> RunSpec fields and config overrides, and bad names."""

from __future__ import annotations

import argparse

import pytest

from qtbench.cli import run as run_cli
from qtbench.errors import QtbenchError
from qtbench.train import check_names


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def test_defaults():
    args = parse("--algo", "q_transformer", "--task", "drawer_open")
    assert (args.seed, args.steps, args.profile, args.eval_episodes) == (2, None, "default", None)
    assert str(args.results_dir) == "results" and str(args.checkpoint_dir) == "checkpoints"
    assert not (args.resume or args.force or args.video) and args.device == "cpu" and args.threads == 1
    assert (args.checkpoint_every, args.checkpoint_seconds) == (500, 60.0)
    assert run_cli.parse_overrides(args) == {}


def test_ablation_flags_and_set_pairs_become_overrides():
    args = parse("--algo", "q_transformer", "--task", "drawer_open", "--no-conservative", "--no-mc-return",
                 "--n-step", "3", "--set", "learning_rate=1e-4", "history=2", "--set", "dataset = demos")
    assert run_cli.parse_overrides(args) == {
        "learning_rate": "1e-4", "history": "2", "dataset": "demos",
        "conservative": False, "mc_return": False, "n_step": 3,
    }


def test_set_without_equals_is_an_error():
    args = parse("--algo", "bc", "--task", "drawer_open", "--set", "learning_rate")
    with pytest.raises(QtbenchError, match="not KEY=VALUE"):
        run_cli.parse_overrides(args)


def test_unknown_algo_and_task_list_the_valid_names():
    with pytest.raises(QtbenchError, match="unknown algorithm 'qt'") as err:
        check_names("qt", "drawer_open")
    assert "q_transformer" in str(err.value)
    with pytest.raises(QtbenchError, match="unknown task 'drawer'") as err:
        check_names("q_transformer", "drawer")
    assert "drawer_open" in str(err.value) and "move_near" in str(err.value)


def test_runs_with_overrides_write_beside_the_reference_cell(tmp_path, monkeypatch):
    import qtbench.datasets
    import qtbench.train

    specs = []

    def fake_run_cell(spec):
        specs.append(spec)
        raise QtbenchError("stop here")  # only the spec matters

    monkeypatch.setattr(qtbench.train, "run_cell", fake_run_cell)
    monkeypatch.setattr(qtbench.datasets, "ensure_datasets", lambda *args, **kwargs: None)
    base = ["--algo", "q_transformer", "--task", "drawer_open", "--results-dir", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "c")]
    for extra in ([], ["--no-conservative"], ["--set", "conservative=false", "gamma=0.90"]):
        with pytest.raises(QtbenchError):
            run_cli.cmd_run(parse(*base, *extra))
    assert specs[0].results_dir == tmp_path / "r" and specs[0].checkpoint_dir == tmp_path / "c"
    assert specs[1].results_dir == tmp_path / "r" / "ablations" / "q_transformer+no_conservative"
    assert specs[1].checkpoint_dir == tmp_path / "c" / "ablations" / "q_transformer+no_conservative"
    # --set values are typed before they name the directory: the same config, the same place
    assert specs[2].results_dir == tmp_path / "r" / "ablations" / "q_transformer+no_conservative+gamma0.9"
    assert specs[2].overrides == {"conservative": False, "gamma": 0.9}
