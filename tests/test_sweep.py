"""Sweep: grid planning, skip/resume/force, failure isolation, local and Ray executors.

The cells run a stub cell function (module level, so worker processes can import it)
that writes an eval.json the way the training loop does, so no training happens here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qtbench import sweep
from qtbench.cli import sweep as sweep_cli
from qtbench.errors import QtbenchError
from qtbench.results import run_label
from qtbench.sweep import Cell, CellJob, LocalExecutor, SweepConfig, run_sweep


def stub_cell(job: CellJob) -> Path:
    """Writes eval.json with a success rate derived from the seed; task "broken" fails."""
    if job.cell.task == "broken":
        raise RuntimeError(f"stub failure for seed {job.cell.seed}")
    out = job.cell_results_dir
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "algo": job.cell.algo, "task": job.cell.task, "seed": job.cell.seed,
        "success_rate": 0.1 * job.cell.seed, "resume": job.resume, "steps": job.steps,
        "overrides": dict(job.cell.overrides), "pid": os.getpid(),
    }
    (out / "eval.json").write_text(json.dumps(record))
    return out


def no_prepare(tasks, profile, workers):
    pass


def _config(tmp_path: Path, **kw) -> SweepConfig:
    base = dict(
        algos=["q_transformer", "bc"], tasks=["drawer_open"], seeds=[0, 1],
        results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ckpt", steps=7,
    )
    base.update(kw)
    return SweepConfig(**base)


class InlineExecutor:
    """Runs jobs in this process: the grid logic tested without process start-up costs."""

    def run(self, jobs, cell_fn):
        for job in jobs:
            yield None  # a heartbeat, as real executors send while cells run
            yield sweep.execute(job, cell_fn)


def test_run_label_and_paths():
    assert run_label("bc", {}) == "bc"
    assert run_label("q_transformer", {"conservative": False}) == "q_transformer+no_conservative"
    assert run_label("q_transformer", {"n_step": 3, "mc_return": False}) == "q_transformer+no_mc_return+n_step3"
    cell = Cell("q_transformer", "all", 2, (("conservative", False),))
    assert cell.results_dir(Path("r")) == Path("r/ablations/q_transformer+no_conservative/all/q_transformer/seed2")
    assert Cell("bc", "all", 0).results_dir(Path("r")) == Path("r/all/bc/seed0")


def test_plan_with_ablations(tmp_path):
    cells = sweep.plan(_config(tmp_path, ablations=True, seeds=[0]))
    labels = [c.label for c in cells]
    assert labels == [
        "q_transformer", "q_transformer+no_conservative", "q_transformer+no_mc_return",
        "q_transformer+n_step3", "bc",
    ]


def test_skip_resume_force_and_prepare_once(tmp_path):
    config = _config(tmp_path)
    prepared = []
    # A finished cell (eval.json) is skipped; the others resume (from a checkpoint if any).
    done = Cell("bc", "drawer_open", 1).results_dir(config.results_dir)
    done.mkdir(parents=True)
    (done / "eval.json").write_text(json.dumps({"success_rate": 0.5}))

    ckpt = Cell("bc", "drawer_open", 0).checkpoint_dir(config.checkpoint_dir)
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(b"")
    assert [state for _, state in sweep.plan_status(config)] == [
        "run", "run", "resume from checkpoint", "finished: skip"]
    assert "4 cells, 3 to run" in sweep_cli.format_plan(sweep.plan_status(config))

    outcomes = run_sweep(config, InlineExecutor(), stub_cell, prepare=lambda *a: prepared.append(a))
    status = {str(o.cell): o.status for o in outcomes}
    assert status == {
        "q_transformer/drawer_open/seed0": "done", "q_transformer/drawer_open/seed1": "done",
        "bc/drawer_open/seed0": "done", "bc/drawer_open/seed1": "skipped",
    }
    assert prepared == [(["drawer_open"], "default", 1)]  # once, before the cells
    evals = {p.parent.parent.name + str(p.parent.name): json.loads(p.read_text()) for p in config.results_dir.rglob("eval.json")}
    assert evals["q_transformerseed0"]["resume"] is True
    assert evals["q_transformerseed1"]["resume"] is True
    assert evals["q_transformerseed0"]["steps"] == 7
    assert evals["bcseed1"] == {"success_rate": 0.5}  # untouched
    assert [o.success_rate for o in outcomes] == [0.0, 0.1, 0.0, 0.5]

    # Everything finished: nothing runs, datasets are not even checked.
    prepared.clear()
    again = run_sweep(config, InlineExecutor(), stub_cell, prepare=lambda *a: prepared.append(a))
    assert {o.status for o in again} == {"skipped"} and prepared == []

    # --force re-runs every cell from scratch (no resume).
    forced = run_sweep(_config(tmp_path, force=True), InlineExecutor(), stub_cell, prepare=no_prepare)
    assert {o.status for o in forced} == {"done"}
    assert json.loads((done / "eval.json").read_text())["resume"] is False


def test_a_cell_made_on_other_data_runs_again(tmp_path, monkeypatch, caplog):
    """After the datasets are regenerated, a finished cell whose eval.json records the old
    fingerprint, or an interrupted one whose checkpoint does, runs again from scratch; one on the
    current data, or without a record, is kept."""
    config = _config(tmp_path, algos=["bc"], seeds=[0, 1, 2])
    record = {"profile": "default", "failure_source": "bc", "fingerprint": "sha256:new"}
    monkeypatch.setattr("qtbench.data.store.data_record", lambda task, profile, source, split: dict(record))
    for seed, fingerprint in ((0, "sha256:old"), (1, "sha256:new")):
        cell_dir = Cell("bc", "drawer_open", seed).results_dir(config.results_dir)
        cell_dir.mkdir(parents=True)
        record_then = {"success_rate": 0.5, "data": dict(record, fingerprint=fingerprint)}
        (cell_dir / "eval.json").write_text(json.dumps(record_then))
    interrupted = Cell("bc", "drawer_open", 2).checkpoint_dir(config.checkpoint_dir)
    monkeypatch.setattr("qtbench.checkpoint.load", lambda directory: SimpleNamespace(
        data=dict(record, fingerprint="sha256:old"), algo_config={}) if directory == interrupted else None)
    old = "fingerprint sha256:old, datasets now sha256:new"
    assert [state for _, state in sweep.plan_status(config)] == [
        f"run from scratch: finished on other data ({old})", "finished: skip",
        f"run from scratch: its checkpoint was made on other data ({old})"]
    assert "3 cells, 2 to run" in sweep_cli.format_plan(sweep.plan_status(config))
    with caplog.at_level("WARNING"):
        outcomes = run_sweep(config, InlineExecutor(), stub_cell, prepare=no_prepare)
    assert [o.status for o in outcomes] == ["done", "skipped", "done"]
    assert "bc/drawer_open/seed0 finished on other data" in caplog.text
    for seed in (0, 2):  # not continued from a checkpoint trained on the old data
        rerun = json.loads((Cell("bc", "drawer_open", seed).results_dir(config.results_dir) / "eval.json").read_text())
        assert rerun["resume"] is False

    def no_datasets(*args):
        raise QtbenchError("dataset not found")

    monkeypatch.setattr("qtbench.data.store.data_record", no_datasets)  # cannot tell: keep it
    assert sweep.why_stale(Cell("bc", "drawer_open", 0), config) is None


def test_a_cell_finished_with_amp_auto_counts_by_the_precision_it_ran_in(tmp_path, monkeypatch):
    """Cells finished when the transformers' default was amp "auto" ran float32 on a CPU whose
    machine line says bfloat16 was emulated: the same run as today's "none", so they stay;
    one made where bfloat16 was in hardware ran in bf16 and runs again."""
    import dataclasses

    from qtbench import nets
    from qtbench.train import reference_config

    monkeypatch.setattr(nets, "native_bf16", lambda device: False)
    config = _config(tmp_path, algos=["bc"], seeds=[0, 1])
    stored = dict(dataclasses.asdict(reference_config("bc", {}, config.tuned)), amp="auto")
    for seed, words in ((0, nets.BF16_EMULATED), (1, nets.BF16_IN_HARDWARE)):
        cell_dir = Cell("bc", "drawer_open", seed).results_dir(config.results_dir)
        cell_dir.mkdir(parents=True)
        (cell_dir / "config.json").write_text(json.dumps({"algo_config": stored}))
        (cell_dir / "eval.json").write_text(json.dumps({"success_rate": 0.5, "machine": f"2 CPU cores ({words})"}))
    assert [state for _, state in sweep.plan_status(config)] == [
        "finished: skip", "run from scratch: finished with other settings (amp bf16 (now none))"]


@pytest.mark.parametrize("cores, memory_gib, expected", [(2, 24, 2), (64, 24, 12), (8, 1, 1)])
def test_a_sweep_fills_the_cores_the_memory_allows_by_default(monkeypatch, cores, memory_gib, expected):
    from qtbench.cli import build_parser

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": memory_gib * 2**30 // 4096}
    monkeypatch.setattr(os, "sysconf", pages.__getitem__)
    assert sweep.default_workers() == expected  # one per core, one per CELL_MEMORY_GIB (2 GiB)
    for command in ("sweep", "tune --algo bc"):
        assert build_parser().parse_args(command.split()).workers == expected


def test_failing_cell_is_reported_and_others_continue(tmp_path, capsys):
    config = _config(tmp_path, tasks=["broken", "drawer_open"], algos=["bc"], seeds=[3])
    outcomes = run_sweep(config, InlineExecutor(), stub_cell, prepare=no_prepare)
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert outcomes[0].error == "RuntimeError: stub failure for seed 3"
    assert 'raise RuntimeError(f"stub failure' in outcomes[0].traceback  # where it failed
    table = sweep_cli.format_outcomes(outcomes)
    assert "stub failure for seed 3" in table and "1 done, 0 skipped, 1 failed" in table


def test_execute_leaves_the_calling_process_as_it_was(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    before = torch.get_num_threads()
    job = CellJob(Cell("bc", "broken", 0), tmp_path, tmp_path, torch_threads=before + 1)
    assert sweep.execute(job, stub_cell).status == "failed"
    assert torch.get_num_threads() == before and "TQDM_DISABLE" not in os.environ


def test_torch_threads_sets_the_count_inside_the_block_and_restores_it_after_an_error():
    import torch

    from qtbench.threads import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_local_process_pool_executor(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "HEARTBEAT_SECONDS", 0.05)  # ticks while the workers start
    config = _config(tmp_path, tasks=["broken", "drawer_open"], algos=["bc"], seeds=[0, 1])
    outcomes = run_sweep(config, LocalExecutor(workers=2), stub_cell, prepare=no_prepare)
    assert [o.status for o in outcomes] == ["failed", "failed", "done", "done"]
    assert [o.success_rate for o in outcomes[2:]] == [0.0, 0.1]
    assert sorted(p.parent.name for p in config.results_dir.rglob("eval.json")) == ["seed0", "seed1"]


def test_every_cell_runs_in_a_fresh_process(tmp_path):
    config = _config(tmp_path, algos=["bc"], seeds=[0, 1, 2])
    run_sweep(config, LocalExecutor(workers=1), stub_cell, prepare=no_prepare)
    pids = {json.loads(p.read_text())["pid"] for p in config.results_dir.rglob("eval.json")}
    assert len(pids) == 3 and os.getpid() not in pids


def sleeping_cell(job: CellJob) -> Path:
    """Records its worker's pid, then runs far longer than any test waits; SIGTERM ends it
    as it ends a training cell (an interrupt, after which the worker process exits)."""
    from qtbench.cli import _raise_interrupt

    signal.signal(signal.SIGTERM, _raise_interrupt)
    out = job.cell_results_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return out


SWEEP_UNTIL_SIGTERM = """
import signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_sweep import _config, no_prepare, sleeping_cell
from qtbench.cli import _raise_interrupt
from qtbench.sweep import LocalExecutor, run_sweep

signal.signal(signal.SIGTERM, _raise_interrupt)  # the handler qtbench.cli.main installs for every command
run_sweep(_config(Path({tmp!r}), algos=["bc"], seeds=[0, 1]), LocalExecutor(workers=1), sleeping_cell, prepare=no_prepare)
"""


def _alive(pid: int, within_seconds: float) -> bool:
    """Whether the process still runs after up to ``within_seconds`` (zombies count as gone)."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        try:
            if "zombie" in Path(f"/proc/{pid}/status").read_text():
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


def test_sigterm_to_a_sweep_stops_its_workers(tmp_path):
    script = SWEEP_UNTIL_SIGTERM.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    sweep_proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        pid_file = tmp_path / "results" / "drawer_open" / "bc" / "seed0" / "worker.pid"
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert sweep_proc.poll() is None and time.monotonic() < deadline, sweep_proc.stderr.read()
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        sweep_proc.send_signal(signal.SIGTERM)
        assert sweep_proc.wait(timeout=60) != 0
        assert not _alive(worker, within_seconds=10), "the worker outlived the sweep"
        assert "Exception in thread" not in sweep_proc.stderr.read()  # CPython gh-119592's traceback
    finally:
        sweep_proc.kill()
    # the queued cell (seed 1) was cancelled, not started
    assert not (tmp_path / "results" / "drawer_open" / "bc" / "seed1").exists()


def test_ray_executor_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed: pip install '.[distributed]' to test the Ray executor")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = _config(tmp_path, tasks=["broken", "drawer_open"], algos=["q_transformer"], seeds=[0, 2])
        outcomes = run_sweep(config, sweep.RayExecutor(cpus_per_task=1), stub_cell, prepare=no_prepare)
    finally:
        ray.shutdown()
    assert [o.status for o in outcomes] == ["failed", "failed", "done", "done"]
    assert outcomes[0].error == "RuntimeError: stub failure for seed 0"
    assert [o.success_rate for o in outcomes[2:]] == [0.0, pytest.approx(0.2)]


def test_ray_connection_failure_says_how_to_fix(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray not installed: pip install '.[distributed]' to test the Ray executor")
    from qtbench.errors import QtbenchError

    def refuse(**kwargs):
        raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}")

    monkeypatch.setattr(ray, "init", refuse)
    executor = sweep.RayExecutor(address="10.0.0.9:6379")
    with pytest.raises(QtbenchError, match="cannot connect to the Ray cluster at 10.0.0.9:6379") as err:
        list(executor.run([], stub_cell))
    assert "RAY_AUTH_MODE=token" in str(err.value)


def test_cli_rejects_unknown_algo(tmp_path):
    import argparse

    from qtbench.errors import QtbenchError

    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", "--algos", "nope", "--results-dir", str(tmp_path)])
    with pytest.raises(QtbenchError, match="unknown algorithm 'nope'"):
        args.func(args)


def test_end_to_end_real_cells_then_leaderboard_and_reproduce(small_datasets, tmp_path, monkeypatch):
    """Real run_cell (the tiny test algorithm of test_train) -> leaderboard -> reproduce."""
    from qtbench import leaderboard, reproduce
    from qtbench.algorithms import ALGORITHMS
    from test_train import Tiny

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")
    monkeypatch.setattr(sweep, "ABLATION_ALGO", "tiny")
    config = _config(tmp_path, algos=["tiny"], seeds=[0, 1], ablations=True, steps=12, profile="small",
                     eval_episodes_per_instruction=1)
    outcomes = run_sweep(config, InlineExecutor())
    status = {str(o.cell): o.status for o in outcomes}
    # Tiny has no mc_return field: that variant fails with the config error, the rest finish.
    assert status == {f"{label}/drawer_open/seed{s}": ("failed" if "mc_return" in label else "done")
                      for label in ("tiny", "tiny+no_conservative", "tiny+no_mc_return", "tiny+n_step3")
                      for s in (0, 1)}
    failed = next(o for o in outcomes if o.status == "failed")
    assert "mc_return" in failed.error and failed.traceback is None  # a QtbenchError: its message says it all

    files = leaderboard.write_leaderboard(config.results_dir, tmp_path / "benchmarks.md")
    text = files.benchmarks.read_text()
    assert "| drawer_open | `tiny+n_step3` |" in text and "| drawer_open | `tiny` |" in text
    assert "- budget: 12 gradient steps per run (dataset profile small)" in text
    assert "- evaluation: 3 episodes per run (1 per instruction; the same reset seeds for every algorithm" in text

    verdict, _ = reproduce.reproduce_cell(config.results_dir / "ablations" / "tiny+n_step3" / "drawer_open"
                                          / "tiny" / "seed1", tmp_path / "work")
    assert verdict.kind == reproduce.IDENTICAL, reproduce.format_verdict(verdict)


def test_cli_dry_run_lists_the_plan(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", "--algos", "q_transformer", "--tasks", "drawer_open", "--seeds", "0", "1",
                              "--ablations", "--results-dir", str(tmp_path), "--dry-run"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| q_transformer+no_mc_return | drawer_open | 1 | run |" in out and "8 cells, 8 to run" in out
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_job_maps_onto_the_training_run_spec(tmp_path):
    cell = Cell("q_transformer", "all", 2, (("n_step", 3),))
    job = CellJob(cell, tmp_path / "r", tmp_path / "c", steps=50, profile="small", eval_episodes_per_instruction=2,
                  resume=True, torch_threads=1)
    spec = job.run_spec()
    assert (spec.algo, spec.task, spec.seed, spec.steps, spec.profile) == ("q_transformer", "all", 2, 50, "small")
    assert spec.overrides == {"n_step": 3} and spec.resume and spec.threads == 1 and not spec.progress
    assert spec.eval_episodes_per_instruction == 2
    # run_cell writes <results_dir>/<task>/<algo>/seed<k>: the ablation root makes that the cell's own dir.
    assert spec.results_dir / "all" / "q_transformer" / "seed2" == job.cell_results_dir
    assert spec.checkpoint_dir == tmp_path / "c" / "ablations" / "q_transformer+n_step3"
