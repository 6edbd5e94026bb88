"""Generation of real qtbench datasets (small profile, drawer_open: about a second each)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from qtbench.data import (
    EVAL_SEED_OFFSET,
    TransitionData,
    WindowSampler,
    ensure_datasets,
    eval_seeds,
    generate_task,
)
from qtbench.data.profiles import PROFILES
from qtbench.data.store import dataset_dir, read_dataset
from qtbench.envs.instructions import instructions_for
from qtbench.errors import QtbenchError

TASK = "drawer_open"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One small generation shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    manifests = generate_task(TASK, "small", seed=0, workers=1, progress=False)
    yield manifests
    mp.undo()


def test_counts_and_rewards(generated):
    small = PROFILES["small"]
    texts = [ins.text for ins in instructions_for(TASK)]
    demos = read_dataset(TASK, "demos").episodes
    failures = read_dataset(TASK, "failures").episodes
    mixed = read_dataset(TASK, "mixed").episodes
    assert len(demos) == small.demos_per_instruction * len(texts)
    assert len(failures) == small.failures_per_instruction * len(texts)
    assert len(mixed) == len(demos) + len(failures)
    assert all(np.isfinite(ep["states"]).all() for ep in mixed)
    for ep in demos:
        assert ep["rewards"][-1] == 1.0 and ep["terminations"][-1] and ep["rewards"][:-1].sum() == 0
    for ep in failures:
        assert ep["rewards"].sum() == 0 and not ep["terminations"].any() and ep["truncations"][-1]
    for split, per_ins in (("demos", small.demos_per_instruction), ("failures", small.failures_per_instruction)):
        assert generated[split]["per_instruction"] == {t: per_ins for t in texts}
    m = generated["mixed"]
    assert m["success_fraction"] == pytest.approx(len(demos) / len(mixed))
    assert m["collectors"]["failures"]["collector"] == "autonomous"
    assert m["discarded_autonomous_successes"] == m["collectors"]["failures"]["discarded"]


def test_seeds_are_disjoint_from_evaluation(generated):
    seeds = np.array(generated["mixed"]["episode_seeds"])
    assert len(set(seeds.tolist())) == len(seeds)
    assert seeds.max() < EVAL_SEED_OFFSET <= eval_seeds(5, run_seed=0).min()
    assert eval_seeds(3, 1).min() > eval_seeds(3, 0).max()


def test_minari_api_round_trip(generated):
    import minari

    ds = minari.load_dataset("qtbench/drawer_open/mixed-v0")
    assert ds.total_episodes == generated["mixed"]["episodes"]
    first = next(iter(ds.iterate_episodes()))
    assert first.observations["state"].shape[0] == len(first.rewards) + 1
    meta = ds.storage.metadata
    assert meta["ref_min_score"] == 0 and meta["ref_max_score"] == 1
    assert "demo" in meta["algorithm_name"] and meta["author"] and meta["code_permalink"]
    env = ds.recover_environment(eval_env=True)
    obs, info = env.reset(seed=EVAL_SEED_OFFSET)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs["state"].shape == first.observations["state"].shape[1:]


def test_training_view_of_generated_data(generated):
    data = TransitionData.load(TASK, "mixed")
    assert data.num_transitions == generated["mixed"]["steps"]
    spec = data.spec_info()
    assert spec.state_dim == data.states.shape[1] and spec.action_dim == 4
    assert spec.max_episode_steps >= int(data.episode_lengths.max())
    batch = WindowSampler(data, history=4, n_step=3, gamma=0.98).sample(32, np.random.default_rng(0))
    assert batch.window.states.shape == (32, 4, spec.state_dim)
    assert np.all((batch.mc_return >= 0) & (batch.mc_return <= 1))
    demos_only = TransitionData.load(TASK, "mixed", successful_only=True)
    assert demos_only.num_episodes == generated["demos"]["episodes"]


def test_cli_commands(generated, tmp_path, capsys):
    from qtbench.data import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["data", *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "qtbench/drawer_open/failures-v0" in run("list")
    info = run("info", "qtbench/drawer_open/mixed-v0")
    assert "success fraction" in info and "open the top drawer" in info
    assert run("verify").count("ok ") == 3
    from qtbench.cli import main  # registered in the top-level dispatcher too

    assert main(["data", "verify", "qtbench/drawer_open/demos-v0"]) == 0
    assert main(["data", "info", "qtbench/nope/demos-v0"]) == 2
    out = tmp_path / "d.npz"
    run("export-d4rl", "drawer_open/mixed", str(out))
    with np.load(out) as z:
        assert len(z["observations"]) == generated["mixed"]["steps"]
        assert z["terminals"].sum() == generated["demos"]["episodes"]
        assert z["timeouts"].sum() == generated["failures"]["episodes"]


def test_generation_is_deterministic_across_workers(tmp_path, monkeypatch, generated):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    again = generate_task(TASK, "small", seed=0, workers=2, progress=False)
    for split in ("demos", "failures", "mixed"):
        assert again[split]["content_hash"] == generated[split]["content_hash"]
    other = generate_task(TASK, "small", seed=1, workers=1, progress=False)
    assert other["mixed"]["content_hash"] != generated["mixed"]["content_hash"]


def test_ensure_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ensure_datasets(TASK, profile="small", seed=0)  # generates
    manifest = json.loads((dataset_dir("qtbench/drawer_open/mixed-v0") / "qtbench_manifest.json").read_text())
    ensure_datasets(TASK, profile="small", seed=0)  # present: verifies
    with pytest.raises(QtbenchError) as err:
        ensure_datasets(TASK, profile="default", seed=0)
    assert "qtbench data generate --task drawer_open --profile default --seed 0" in str(err.value)
    path = dataset_dir("qtbench/drawer_open/demos-v0") / "data" / "main_data.hdf5"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(QtbenchError) as err:
        ensure_datasets(TASK, profile="small", seed=0)
    assert "demos-v0" in str(err.value) and "--profile small --seed 0" in str(err.value)
    assert manifest["profile"] == "small"


def tiny_bc_checkpoint(directory):
    """An untrained, tiny BC policy saved the way the training loop saves checkpoints."""
    import dataclasses

    import torch

    from qtbench import checkpoint
    from qtbench.algorithms import algorithm_class

    cls = algorithm_class("bc")
    config = cls.config_class(d_model=16, n_layers=1, n_heads=2, bins=8, history=2)
    algo = cls(TransitionData.load(TASK, config.dataset).spec_info(), config)
    checkpoint.save(directory, checkpoint.TrainState(
        algo="bc", algo_config=dataclasses.asdict(config), step=7, algorithm=algo.state_dict(),
        sampler_rng={}, torch_rng=torch.get_rng_state(),
    ))
    return directory


def test_autonomous_policy_from_checkpoint(tmp_path, monkeypatch):
    """Failures collected by a trained-policy checkpoint through the Algorithm protocol."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    generate_task(TASK, "small", seed=0, progress=False)
    ckpt_dir = tiny_bc_checkpoint(tmp_path / "ckpt")
    manifests = generate_task(TASK, "small", seed=0, progress=False, autonomous_policy=ckpt_dir)
    failures = read_dataset(TASK, "failures")
    assert len(failures.episodes) == PROFILES["small"].failures_per_instruction * len(instructions_for(TASK))
    assert all(ep["rewards"].sum() == 0 for ep in failures.episodes)
    m = manifests["failures"]
    assert m["autonomous_policy"] == {"algo": "bc", "checkpoint": str(ckpt_dir), "step": 7}
    assert m["collectors"]["failures"]["collector"] == "checkpoint:bc"
    assert f"--autonomous-policy {ckpt_dir}" in m["regenerate"]
    with pytest.raises(QtbenchError, match="no training checkpoint"):
        generate_task(TASK, "small", seed=0, progress=False, autonomous_policy=tmp_path / "nothing")


@pytest.mark.slow
def test_autonomous_policy_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    generate_task(TASK, "small", seed=0, progress=False)
    ckpt_dir = tiny_bc_checkpoint(tmp_path / "ckpt")
    first = generate_task(TASK, "small", seed=0, progress=False, autonomous_policy=ckpt_dir)
    again = generate_task(TASK, "small", seed=0, progress=False, autonomous_policy=ckpt_dir)
    assert again["mixed"]["content_hash"] == first["mixed"]["content_hash"]


def test_units_and_seed_scheme():
    from qtbench.data.generate import make_units
    from qtbench.data.profiles import episode_seed

    units = make_units("all", "default", 0, instructions=4)
    texts = [u.instruction for u in units if u.split == "demos"]
    every = [ins.text for ins in instructions_for("all")]
    assert texts == [every[0], every[16], every[33], every[49]]
    assert [u.target for u in units] == [20] * 4 + [40] * 4
    assert len(make_units(TASK, "large", 0)) == 2 * len(instructions_for(TASK))
    a = episode_seed(TASK, "small", 0, "demos", every[0], 0)
    assert a == episode_seed(TASK, "small", 0, "demos", every[0], 0)
    assert a != episode_seed(TASK, "small", 0, "demos", every[0], 1)
    assert a != episode_seed(TASK, "small", 1, "demos", every[0], 0)
    with pytest.raises(QtbenchError, match="use one of"):
        make_units(TASK, "huge", 0)
