"""`qtbench bench train`: the synthetic batch follows the Batch contract, the timing loop,
the written section, and clear errors for bad names and missing reference packages."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from qtbench import train_bench
from qtbench.bench_worker import time_calls
from qtbench.algorithms.base import EnvSpecInfo
from qtbench.envs.instructions import instructions_for, tokenize
from qtbench.errors import QtbenchError


SPEC = EnvSpecInfo(state_dim=5, action_dim=4, vocab_size=40, max_tokens=14, max_episode_steps=10)


def _args(tmp_path, **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_bench.register(parser.add_subparsers())
    flags = ["train", "--algo", "q_transformer", "--seconds", "0.2", "--warmup", "1", "--batch-size", "4",
             "--rollout-episodes", "0", "--output", str(tmp_path / "benchmarks.md")]
    for key, value in kw.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(flags)


def test_synthetic_batch_follows_the_batch_contract():
    texts = [ins.text for ins in instructions_for("drawer_open")]
    batch = train_bench.synthetic_batch(SPEC, history=3, gamma=0.9, batch_size=64, texts=texts, rng=np.random.default_rng(0))
    w = batch.window
    assert w.states.shape == (64, 3, 5) and w.states.dtype == np.float32
    assert w.actions.shape == (64, 3, 4) and np.all(np.abs(w.actions) <= 1)
    assert w.mask[:, -1].all() and not w.mask.all()  # current step real, some windows padded
    assert np.all(w.states[~w.mask] == 0) and np.all(w.timesteps[~w.mask] == 0)
    real = w.mask[:, -2]
    assert np.all(w.timesteps[real, -1] - w.timesteps[real, -2] == 1)  # consecutive steps
    tokens = {tuple(tokenize(t)) for t in texts}
    assert all(tuple(row) in tokens for row in w.instruction)
    assert set(np.unique(batch.bootstrap_discount)) <= {np.float32(0.0), np.float32(0.9)}
    assert np.all(batch.reward[batch.bootstrap_discount > 0] == 0)  # rewards only on terminal steps
    torch_batch = batch.to_torch()
    assert torch_batch.window.instruction.dtype == torch.int64


def test_time_calls_runs_until_the_time_is_up():
    calls = []
    n, elapsed, cpu = time_calls(lambda: calls.append(1), 0.05)
    assert n == len(calls) and n >= 1 and elapsed >= 0.05 and 0 < cpu <= elapsed * 2.5


def test_count_params_skips_frozen_and_shared():
    a, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2).requires_grad_(False)
    assert train_bench.count_params(a, a, frozen) == 8


def test_run_writes_its_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no-data"))
    threads = torch.get_num_threads()
    try:
        assert train_bench.run(_args(tmp_path, threads=1)) == 0
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- qtbench:train-q_transformer -->" in text
    row = next(line for line in text.splitlines() if line.startswith("| qtbench q_transformer"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    params, batch, updates, per_s, samples = cells[1], int(cells[2]), int(cells[3]), float(cells[4]), float(cells[5].replace(",", ""))
    assert int(params.replace(",", "")) > 100_000 and batch == 4 and updates >= 1
    assert samples == pytest.approx(per_s * batch, rel=0.05, abs=1)
    assert "sampler row skipped" in text and "qtbench data generate --task drawer_open" in text
    assert "--algo q_transformer --task drawer_open --batch-size 4 --seconds 0.2 --threads 1" in text
    assert re.search(r"\(1 threads, \w+ kernels( \(portable\))?, bfloat16 ", text)  # machine line: threads, kernels, bfloat16


@pytest.mark.parametrize("flags, message", [
    ({"algo": "nope"}, "unknown algorithm"),
    ({"task": "nope"}, "unknown task"),
    ({"compare": "d3rlpy_iql"}, "reference for 'iql'"),
    ({"variant": "nope=1"}, "no field 'nope'"),
    ({"variant": "history"}, "KEY=VALUE"),
    ({"against": "no-such-ref-xyz"}, "not a commit"),
])
def test_bad_input_is_a_clear_error(tmp_path, flags, message):
    with pytest.raises(QtbenchError, match=message):
        train_bench.run(_args(tmp_path, **flags))


@pytest.mark.skipif(importlib.util.find_spec("q_transformer") is not None, reason="reference package installed here")
def test_missing_reference_package_says_how_to_install(tmp_path):
    with pytest.raises(QtbenchError, match="q-transformer is not importable") as err:
        train_bench.run(_args(tmp_path, compare="q_transformer_pypi"))
    assert "separate venv" in err.value.fix


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line)}


@pytest.mark.skipif(subprocess.run(["git", "-C", str(Path(train_bench.__file__).parent), "rev-parse"],
                                   capture_output=True).returncode != 0, reason="not a git checkout")
def test_against_a_git_ref_variants_and_acting_side_by_side(tmp_path, monkeypatch):
    """--against HEAD times the committed code in a subprocess, --variant this checkout with a
    config change, and the rollout measures acting for this checkout and the ref."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no-data"))
    threads = torch.get_num_threads()
    try:
        args = _args(tmp_path, threads=1, against="HEAD", variant="history=2,amp=bf16", rollout_episodes=2, rounds=1)
        assert train_bench.run(args) == 0
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "benchmarks.md").read_text()
    rows = _rows(text)
    assert int(rows["HEAD q_transformer"][2]) >= 1  # updates timed
    assert int(rows["qtbench q_transformer (history=2, amp=bf16)"][2]) >= 1
    assert "qtbench q_transformer (history=2, amp=bf16): history 2, amp bf16" in text
    assert "HEAD q_transformer: git HEAD = " in text
    acting = [line for line in text.splitlines() if line.startswith("| ") and "| 32 | 2 |" in line]
    assert len(acting) == 2  # this checkout and HEAD, 32 envs, 2 episodes
    assert not list(Path(tempfile.gettempdir()).glob("qtbench-against-*"))  # the export is removed



def test_reference_harnesses_live_outside_the_installed_package():
    """--compare loads benchmarks/references.py from the source checkout; the installed
    package imports no third-party reference package."""
    assert train_bench.REFERENCES_FILE.exists()
    third_party = re.compile(r"^\s*(from|import) (q_transformer|d3rlpy|open_clip|classifier_free_guidance_pytorch)\b", re.M)
    assert third_party.search(train_bench.REFERENCES_FILE.read_text())  # the pattern finds them where they are
    package = Path(train_bench.__file__).parent
    assert [str(f) for f in package.rglob("*.py") if third_party.search(f.read_text())] == []


def test_compare_without_the_source_checkout_says_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(train_bench, "REFERENCES_FILE", tmp_path / "benchmarks" / "references.py")
    with pytest.raises(QtbenchError, match="source checkout") as err:
        train_bench.reference_rows("d3rlpy_iql", SPEC, None, 4, np.random.default_rng(0), 1)
    assert "pip install -e ." in err.value.fix
