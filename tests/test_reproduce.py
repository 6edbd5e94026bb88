"""Reproduce: verdict logic on fixture records, bad paths, a real tiny cell re-run from its
results dir (identical eval.json), and dataset re-generation against manifest hashes."""

from __future__ import annotations

import argparse
import copy
import json
import shutil

import pytest

from qtbench import reproduce as rp
from qtbench.cli import reproduce as reproduce_cli
from qtbench.errors import QtbenchError

RECORD = {
    "algo": "q_transformer", "task": "drawer_open", "seed": 0, "train_steps": 10,
    "train_seconds": 3.0, "eval_seconds": 1.0, "machine": "a",
    "success_rate": 0.5, "ci95": [0.2, 0.8], "episodes": 20,
    "per_skill": {"drawer_open": {"success_rate": 0.5, "ci95": [0.2, 0.8], "episodes": 20, "successes": 10}},
    "per_instruction": {"open the top drawer": {"success_rate": 0.5, "episodes": 20, "successes": 10}},
}
# Tiny Q-Transformer: the pipeline is real, the network small so a cell takes ~2 s.
TINY = {"d_model": 32, "n_layers": 1, "n_bins": 32, "batch_size": 16}


def test_identical_ignores_timings():
    verdict = rp.compare(RECORD, dict(copy.deepcopy(RECORD), train_seconds=99.0, eval_seconds=5.0, machine="b"))
    assert verdict.kind == rp.IDENTICAL and verdict.differences == () and verdict.identical


def test_within_tolerance_and_different():
    near = copy.deepcopy(RECORD)
    near["success_rate"], near["per_skill"]["drawer_open"]["successes"] = 0.55, 11
    verdict = rp.compare(RECORD, near, tolerance=0.05)
    assert verdict.kind == rp.WITHIN
    assert [(d.field, d.original, d.reproduced) for d in verdict.differences] == [
        ("success_rate", 0.5, 0.55), ("per_skill[drawer_open].successes", 10, 11)]
    assert rp.compare(RECORD, near, tolerance=0.01).kind == rp.DIFFERENT  # 1 success > 0.01 x 20

    far = copy.deepcopy(RECORD)
    far["per_instruction"]["open the top drawer"]["success_rate"] = 0.9
    verdict = rp.compare(RECORD, far)
    assert verdict.kind == rp.DIFFERENT
    text = rp.format_verdict(verdict)
    assert "verdict: different" in text and "| per_instruction[open the top drawer].success_rate | 0.5 | 0.9 |" in text
    assert "tolerance: every rate within 0.05" in text

    fewer = copy.deepcopy(RECORD)
    fewer["train_steps"] = 11  # steps and episode counts never count as "within tolerance"
    assert rp.compare(RECORD, fewer, tolerance=0.5).kind == rp.DIFFERENT
    missing = copy.deepcopy(RECORD)
    del missing["per_skill"]
    assert rp.compare(RECORD, missing, tolerance=1.0).kind == rp.DIFFERENT


def test_bad_paths(tmp_path):
    with pytest.raises(QtbenchError, match="is not a directory"):
        rp.read_cell(tmp_path / "nope")
    with pytest.raises(QtbenchError, match="no config.json"):
        rp.read_cell(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(QtbenchError, match="no eval.json: the run did not finish"):
        rp.read_cell(tmp_path)
    (tmp_path / "eval.json").write_text("{not json")
    with pytest.raises(QtbenchError, match="cannot read the evaluation record"):
        rp.read_cell(tmp_path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    reproduce_cli.register(parser.add_subparsers())
    return parser


def test_cli_needs_exactly_one_target(tmp_path):
    args = _parser().parse_args(["reproduce"])
    with pytest.raises(QtbenchError, match="either a cell's results directory or --datasets"):
        args.func(args)
    args = _parser().parse_args(["reproduce", str(tmp_path / "missing")])
    with pytest.raises(QtbenchError, match="is not a directory"):
        args.func(args)


@pytest.fixture
def minari(monkeypatch, small_datasets):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    return small_datasets


def test_tiny_cell_reproduces_identically(minari, tmp_path, capsys, monkeypatch):
    from qtbench.results import comparable_eval
    from qtbench.train import RunSpec, run_cell

    overrides = dict(TINY, conservative=False)  # an ablation-style override travels via config.json
    original = run_cell(RunSpec(
        algo="q_transformer", task="drawer_open", steps=10, profile="small", results_dir=tmp_path / "results",
        checkpoint_dir=tmp_path / "ckpt", overrides=overrides, eval_episodes_per_instruction=1,
        log_every=5, checkpoint_every=10, progress=False, threads=1,  # 2 threads spin on a busy 2-core box
    ))
    verdict, again = rp.reproduce_cell(original, tmp_path / "work")
    assert verdict.kind == rp.IDENTICAL, rp.format_verdict(verdict)
    assert verdict.notes == ("training losses bit-identical at all 2 logged steps",)  # log_every 5 of 10
    assert again == tmp_path / "work" / "results" / "drawer_open" / "q_transformer" / "seed0"
    first, second = (json.loads((d / "eval.json").read_text()) for d in (original, again))
    assert comparable_eval(first) == comparable_eval(second) and first["episodes"] == 3

    # A tampered record is reported as different, with the number that differs; exit code 1.
    # (The CLI's re-run is replaced by the one above: the comparison is what is tested here.)
    record = dict(first, success_rate=first["success_rate"] + 0.5)
    (original / "eval.json").write_text(json.dumps(record))
    monkeypatch.setattr("qtbench.train.run_cell", lambda spec: again)
    args = _parser().parse_args(["reproduce", str(original)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "verdict: different" in out and f"| success_rate | {record['success_rate']} |" in out
    assert "- training losses bit-identical at all 2 logged steps" in out


def _metrics(path, losses):
    path.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{step},1.0,{loss!r},0.5\n" for step, loss in losses)
    (path / "metrics.csv").write_text("step,wall_seconds,loss,grad_norm\n" + rows)
    return path


def test_training_drift_names_the_first_differing_step(tmp_path):
    original = _metrics(tmp_path / "a", [(50, 4.527005319595337), (100, 3.95), (150, 3.76)])
    same = _metrics(tmp_path / "b", [(50, 4.527005319595337), (100, 3.95), (150, 3.76), (200, 3.5)])
    assert rp.training_drift(original, same) == "training losses bit-identical at all 3 logged steps"
    # the last digit of a float sum, as on another CPU vendor
    drifted = _metrics(tmp_path / "c", [(50, 4.527005319595337), (100, 3.9500000000000006), (150, 3.7)])
    assert rp.training_drift(original, drifted) == (
        "training losses first differ at step 100 of 150: 3.95 (original) against 3.9500000000000006 (re-run), "
        "relative 1.1e-16; 2 of 3 logged steps differ")
    assert rp.training_drift(original, tmp_path / "none") is None


def test_context_notes_name_other_data_and_machines():
    def data(demos, mixed, read="demos"):
        ids = {"demos": "qtbench/drawer_open/demos-default-v0", "mixed": "qtbench/drawer_open/mixed-default-bc-v0"}
        return {"dataset_id": ids[read], "fingerprint": mixed,
                "content_hashes": {ids["demos"]: demos, ids["mixed"]: mixed}}

    here = dict(RECORD, data=data("sha256:4bf6f0101f34c7e5", "sha256:9c480ba8029f482d"), machine="AMD EPYC")
    assert rp.context_notes(here, copy.deepcopy(here)) == []
    # BC read the demos, equal on both machines: only the failures (and so the fingerprint) differ
    there = dict(here, data=data("sha256:4bf6f0101f34c7e5", "sha256:5c686a70729f680b"), machine="Intel Xeon")
    assert rp.context_notes(here, there) == [
        "read the same dataset (qtbench/drawer_open/demos-default-v0, sha256:4bf6f0101f34); the regime's other "
        "datasets differ (fingerprint sha256:9c480ba8029f of the original, sha256:5c686a70729f of the re-run)",
        "other machine: the original ran on AMD EPYC; the re-run on Intel Xeon",
    ]
    mixed_here = dict(here, data=data("sha256:4bf6f0101f34c7e5", "sha256:9c480ba8029f482d", read="mixed"))
    mixed_there = dict(mixed_here, data=data("sha256:4bf6f0101f34c7e5", "sha256:5c686a70729f680b", read="mixed"))
    assert rp.context_notes(mixed_here, mixed_there) == [
        "trained on other data: the original's fingerprint sha256:9c480ba8029f, the re-run's sha256:5c686a70729f; "
        "`qtbench reproduce --datasets --task drawer_open` says whether this machine re-generates the stored datasets"]


def test_config_overrides_are_the_differences_from_defaults():
    from dataclasses import asdict

    from qtbench.q_transformer import QTransformerConfig

    stored = json.loads(json.dumps(asdict(QTransformerConfig(n_step=3, conservative=False))))
    assert rp.config_overrides("q_transformer", stored) == {"n_step": 3, "conservative": False}
    with pytest.raises(QtbenchError, match="no longer has"):
        rp.config_overrides("q_transformer", dict(stored, gone=1))
    # A config stored before fields were added ran as they were then: it is reproduced so.
    older = {k: v for k, v in stored.items() if k not in ("amp", "relative_positions", "stack_history",
                                                          "instruction_token", "gripper_first", "demo_styles")}
    assert rp.config_overrides("q_transformer", older) == {
        "n_step": 3, "conservative": False, "relative_positions": False,
        "stack_history": False, "instruction_token": False, "gripper_first": False,
    }


def test_datasets_regenerate_to_the_manifest_hashes(minari, tmp_path, monkeypatch):
    assert rp.stored_tasks() == ["drawer_open"]
    verdict = rp.reproduce_datasets(["drawer_open"], tmp_path / "regen")
    assert verdict.kind == rp.IDENTICAL, verdict.differences
    assert (tmp_path / "regen" / "drawer_open").is_dir()

    # A dataset whose manifest hash does not match what the generator makes is "different".
    copy_root = tmp_path / "copy"
    shutil.copytree(minari, copy_root)
    manifest = next(p for p in copy_root.rglob("qtbench_manifest.json") if "demos" in str(p))
    data = json.loads(manifest.read_text())
    data["content_hash"], data["code"] = "sha256:" + "0" * 64, "qtbench 0.0.9 (git old)"
    manifest.write_text(json.dumps(data))
    failures = next(p for p in copy_root.rglob("qtbench_manifest.json") if "failures" in str(p))
    assert json.loads(failures.read_text())["machine"]  # generation records where it ran
    failures.write_text(json.dumps(dict(json.loads(failures.read_text()), machine="a CPU of another vendor")))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(copy_root))
    verdict = rp.reproduce_datasets(["drawer_open"], tmp_path / "regen2")
    assert verdict.kind == rp.DIFFERENT
    assert [d.field.rsplit(".", 1)[1] for d in verdict.differences] == ["content_hash"]
    assert verdict.differences[0].original == "sha256:" + "0" * 64
    assert verdict.notes[0].startswith("drawer_open: stored datasets were made by qtbench 0.0.9 (git old)")
    assert verdict.notes[1].startswith("drawer_open: stored failures were collected on a CPU of another vendor; "
                                       "this machine is ")

    # Failures collected by a given checkpoint (--autonomous-policy) cannot be re-generated by
    # this command: say so.
    for split in ("failures", "mixed"):
        bc = next(p for p in copy_root.rglob(f"{split}-small-bc-v0"))
        shutil.copytree(bc, bc.parent / f"{split}-small-policy0a1b2c3d-v0")
    with pytest.raises(QtbenchError, match="collected by a given checkpoint"):
        rp.reproduce_datasets(["drawer_open"], tmp_path / "regen3")
