"""Algorithm config ranges: declared beside every field, checked when a config is built,
reported with the field, the value and the range, and checked by `qtbench run` before it
writes anything."""

from __future__ import annotations

import dataclasses
import math

import pytest

from qtbench.algorithms import ALGORITHMS, AlgoConfig, algorithm_class
from qtbench.algorithms.ranges import Range, added, completed, differing_fields, range_of, ranged
from qtbench.cli import main
from qtbench.errors import QtbenchError


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_every_field_of_every_algorithm_declares_a_range(algo):
    config_class = algorithm_class(algo).config_class
    unchecked = [f.name for f in dataclasses.fields(config_class)
                 if f.type not in (bool, "bool") and range_of(config_class, f.name) is None]
    assert unchecked == []
    config_class()  # the reference config is in range


def test_completed_fills_added_fields_at_their_earlier_value():
    @dataclasses.dataclass
    class Old:
        width: int = ranged(8, at_least=1)

    @dataclasses.dataclass
    class New(Old):
        fast: bool = added(True, before=False)
        mode: str = added("b", before="a", one_of=("a", "b"))
        tags: tuple = added(("x",), before=())
        plain: int = 3  # added without saying how configs ran before it: stays missing

    assert completed(New, {"width": 4}) == {"width": 4, "fast": False, "mode": "a", "tags": []}
    assert completed(New, {"width": 4, "fast": True}) == {"width": 4, "fast": True, "mode": "a", "tags": []}
    assert range_of(New, "mode") == Range(one_of=("a", "b")) and range_of(New, "fast") is None
    assert range_of(New, "width") == Range(at_least=1)


@pytest.mark.parametrize("algo, field, value, expected", [
    ("q_transformer", "history", 0, "history=0 is out of range: history must be >= 1"),
    ("q_transformer", "n_step", 0, "n_step=0 is out of range: n_step must be >= 1"),
    ("q_transformer", "n_heads", 3, "n_heads=3 is out of range: n_heads must be >= 1 and a divisor of d_model (128)"),
    ("bc", "n_heads", 5, "n_heads must be >= 1 and a divisor of d_model (128)"),
    ("dt", "history", 0, "history must be >= 1"),  # DTConfig re-declares history=10: the range is inherited
    ("q_transformer", "batch_size", 0, "batch_size=0 is out of range: batch_size must be >= 1"),
    ("bc", "dropout", 1.0, "dropout must be in [0, 1)"),
    ("bc", "demo_styles", ("grasp", "pinch"), "demo_styles must be a list of robust, fragile, grasp, hook"),
    ("iql", "expectile", 1.0, "expectile must be in (0, 1)"),
    ("cql", "tau", 0.0, "tau must be in (0, 1]"),
    ("iql", "gamma", 1.5, "gamma must be in [0, 1]"),
    ("q_transformer", "learning_rate", math.inf, "learning_rate=inf is out of range: learning_rate must be > 0"),
    ("q_transformer", "learning_rate", math.nan, "learning_rate must be > 0"),
    ("bc", "dataset", "expert", "dataset='expert' is out of range: dataset must be one of demos, failures, mixed"),
])
def test_out_of_range_values_name_field_value_and_range(algo, field, value, expected):
    with pytest.raises(QtbenchError) as err:
        algorithm_class(algo).config_class(**{field: value})
    assert expected in str(err.value) and "--set" in err.value.fix


def test_range_descriptions_and_bounds():
    config = AlgoConfig()
    assert Range(at_least=0, below=1).describe(config) == "in [0, 1)"
    assert Range(above=0).describe(config) == "> 0" and Range(at_most=2).describe(config) == "<= 2"
    assert Range().describe(config) == "finite" and not Range().accepts(math.nan, config)
    assert Range(at_least=1).accepts(1, config) and not Range(at_least=1).accepts(0, config)
    assert not Range(at_least=0).accepts(True, config)  # a bool is not a number here
    assert not Range(one_of=("a",)).accepts("b", config) and Range(one_of=lambda: ("b",)).accepts("b", config)


def test_every_problem_is_reported_at_once():
    with pytest.raises(QtbenchError, match=r"history=0 .*; n_step=0 ") as err:
        AlgoConfig(history=0, n_step=0)
    assert "defaults: history=4, n_step=1" in err.value.fix


@pytest.mark.parametrize("argv, expected", [
    (["--set", "n_heads=3"], "n_heads=3 is out of range"),
    (["--set", "history=0", "n_step=0"], "history=0 is out of range"),
    (["--set", "batch_size=0"], "batch_size=0 is out of range"),
    (["--n-step", "0"], "n_step=0 is out of range"),
    (["--steps", "-5"], "--steps -5 is out of range: it must be >= 1"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    (["--eval-episodes", "0"], "--eval-episodes 0 is out of range"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0 is out of range"),
    (["--checkpoint-seconds", "-1"], "--checkpoint-seconds -1.0 is out of range"),
    (["--threads", "-2"], "--threads -2 is out of range"),
    (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
])
def test_run_rejects_bad_input_before_writing_anything(tmp_path, capsys, argv, expected):
    code = main(["run", "--algo", "q_transformer", "--task", "drawer_open", "--no-progress",
                 "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qtbench: error: ") and expected in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_sweep_checks_the_same_settings_before_running(tmp_path, capsys):
    code = main(["sweep", "--algos", "bc", "--tasks", "drawer_open", "--seeds", "-1", "--steps", "-5",
                 "--dry-run", "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "--steps -5 is out of range" in err and "--seed -1 is out of range" in err


def test_differing_fields_names_changed_and_one_sided_fields_sorted():
    have = {"lr": 1e-4, "history": 4, "amp": "bf16"}
    want = {"lr": 3e-4, "history": 4, "dropout": 0.1}
    assert differing_fields(have, want) == ["amp", "dropout", "lr"]
    assert differing_fields(have, dict(have)) == []
    assert differing_fields({"x": None}, {}) == []  # a missing field reads as None
