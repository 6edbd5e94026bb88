"""Minari storage of qtbench datasets, with a tiny stand-in env (no MuJoCo needed):
round trip through Minari's own API, manifests and hashes, corruption, atomicity, D4RL."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from qtbench.data import Episode, TransitionData
from qtbench.data.d4rl import export_d4rl
from qtbench.data.store import (
    MANIFEST_NAME,
    dataset_dir,
    list_datasets,
    parse_dataset_id,
    read_dataset,
    write_dataset,
)
from qtbench.envs.instructions import TEXT_CHARSET, TEXT_MAX_LENGTH
from qtbench.errors import QtbenchError

TOY_ID = "qtbench_test/Toy-v0"
DID = "qtbench/drawer_open/mixed-small-bc-v0"


class ToyEnv(gym.Env):
    """Same observation/action spaces as the suite; the state walks with the action."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            state=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            instruction=gym.spaces.Text(max_length=TEXT_MAX_LENGTH, charset=TEXT_CHARSET),
        )
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self._state = np.zeros(3, np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.zeros(3, np.float32)
        return {"state": self._state.copy(), "instruction": "open the top drawer"}, {}

    def step(self, action):
        self._state = self._state + np.asarray(action[:3], np.float32)
        obs = {"state": self._state.copy(), "instruction": "open the top drawer"}
        return obs, 0.0, False, False, {"success": False}


if TOY_ID not in gym.registry:
    gym.register(id=TOY_ID, entry_point="test_data_store:ToyEnv", max_episode_steps=10)


def toy_episodes() -> list[Episode]:
    """A 3-step success (terminated, reward 1 at the end) and a 2-step truncated failure."""
    return [
        Episode(
            states=np.arange(12, dtype=np.float32).reshape(4, 3), instruction="open the top drawer",
            actions=np.full((3, 4), 0.5, np.float32), rewards=np.array([0, 0, 1], np.float32),
            terminations=np.array([0, 0, 1], bool), truncations=np.zeros(3, bool), seed=11,
        ),
        Episode(
            states=-np.arange(9, dtype=np.float32).reshape(3, 3), instruction="open the middle drawer",
            actions=np.full((2, 4), -0.25, np.float32), rewards=np.zeros(2, np.float32),
            terminations=np.zeros(2, bool), truncations=np.array([0, 1], bool), seed=12,
        ),
    ]


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def write_toy(did: str = DID) -> None:
    manifest = {"task": "drawer_open", "profile": "small", "seed": 0, "max_episode_steps": 10}
    metadata = dict(algorithm_name="toy", author="tests", code_permalink="tests", description="toy data")
    write_dataset(did, toy_episodes(), TOY_ID, manifest, metadata)


def test_minari_round_trip(root):
    import minari

    write_toy()
    assert list_datasets() == [DID]
    assert not [p for p in root.iterdir() if p.name.startswith(".qtbench")], "staging left behind"
    ds = minari.load_dataset(DID)
    assert ds.total_episodes == 2 and ds.total_steps == 5
    episodes = list(ds.iterate_episodes())
    np.testing.assert_array_equal(episodes[0].observations["state"], toy_episodes()[0].states)
    assert episodes[1].observations["instruction"][0] == "open the middle drawer"
    assert episodes[0].rewards[-1] == 1 and episodes[0].terminations[-1]
    env = ds.recover_environment(eval_env=True)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert ds.storage.metadata["ref_min_score"] == 0 and ds.storage.metadata["ref_max_score"] == 1
    assert ds.storage.metadata["algorithm_name"] == "toy"


def test_manifest_and_read_back(root):
    write_toy()
    stored = read_dataset(DID)
    manifest = json.loads((dataset_dir(DID) / MANIFEST_NAME).read_text())
    assert manifest["content_hash"].startswith("sha256:") and manifest["episodes"] == 2
    assert stored.manifest == manifest
    data = TransitionData.load("drawer_open", "mixed", profile="small")
    assert data.num_episodes == 2 and data.num_transitions == 5 and data.max_episode_steps == 10
    np.testing.assert_allclose(data.obs_returns_to_go, [1, 1, 1, 0, 0, 0, 0])
    demos = TransitionData.load("drawer_open", "mixed", successful_only=True, profile="small")
    assert demos.num_episodes == 1 and demos.instructions == ["open the top drawer"]


def test_a_dataset_from_other_physics_is_named_once(root, caplog, monkeypatch):
    import logging

    from qtbench.data import store
    from qtbench.versions import installed_version

    monkeypatch.setattr(store, "_PHYSICS_WARNED", set())
    installed = installed_version("mujoco")
    with caplog.at_level(logging.WARNING, logger="qtbench.data.store"):
        store.check_physics_version(DID, {"versions": {"mujoco": installed}})
        store.check_physics_version(DID, {})  # no record (the store's toy data): nothing to compare
        assert caplog.records == []
        for _ in range(3):  # a sweep reads the dataset once per cell: one warning is enough
            store.check_physics_version(DID, {"versions": {"mujoco": "0.1.0"}})
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert f"MuJoCo 0.1.0, this install has {installed}" in message and "mujoco==0.1.0" in message
    assert "qtbench data generate --task drawer_open --profile small" in message


def test_missing_dataset_names_the_fix(root):
    with pytest.raises(QtbenchError) as err:
        read_dataset("qtbench/drawer_open/demos-small-v0")
    assert "qtbench/drawer_open/demos-small-v0" in str(err.value)
    assert "qtbench data generate --task drawer_open --profile small" in str(err.value)
    with pytest.raises(QtbenchError) as err:
        read_dataset("qtbench/drawer_open/mixed-large-scripted-v0")
    assert "--profile large --seed 0 --failures scripted" in str(err.value)


def test_truncated_file_is_detected(root):
    write_toy()
    path = dataset_dir(DID) / "data" / "main_data.hdf5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(QtbenchError) as err:
        read_dataset(DID)
    assert "corrupt" in str(err.value)
    assert "qtbench data generate --task drawer_open --profile small --seed 0" in str(err.value)


def test_flipped_bytes_are_detected(root):
    write_toy()
    read_dataset(DID)  # a cached read must not hide the change below
    path = dataset_dir(DID) / "data" / "main_data.hdf5"
    with h5py.File(path, "r") as f:  # locate the stored bytes of episode 0's states
        dset = f["episode_0/observations/state"]
        offset = dset.id.get_chunk_info(0).byte_offset if dset.chunks else dset.id.get_offset()
    raw = bytearray(path.read_bytes())
    raw[offset + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(QtbenchError, match="content hash"):
        read_dataset(DID)


def test_missing_manifest_is_half_written(root):
    write_toy()
    (dataset_dir(DID) / MANIFEST_NAME).unlink()
    with pytest.raises(QtbenchError, match="manifest"):
        read_dataset(DID)


def test_failed_write_leaves_nothing(root, monkeypatch):
    import qtbench.data.store as store

    write_toy()
    before = read_dataset(DID).manifest["content_hash"]

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_episode_buffers", broken)
    with pytest.raises(RuntimeError):
        write_toy()
    assert read_dataset(DID).manifest["content_hash"] == before
    assert not [p for p in root.iterdir() if p.name.startswith(".qtbench")]


def test_abandoned_staging_is_cleaned(root):
    write_toy()
    dead = root / ".qtbench-staging-999999999-x"  # no process has this id
    (dead / "qtbench").mkdir(parents=True)
    write_toy()
    assert not dead.exists()


def test_d4rl_export_respects_episode_boundaries(root, tmp_path):
    write_toy()
    out = tmp_path / "toy.npz"
    export_d4rl(DID, out)
    z = np.load(out)
    assert set(z.files) == {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "instructions"}
    eps = toy_episodes()
    np.testing.assert_array_equal(z["observations"], np.concatenate([eps[0].states[:-1], eps[1].states[:-1]]))
    np.testing.assert_array_equal(z["next_observations"], np.concatenate([eps[0].states[1:], eps[1].states[1:]]))
    # the last pair of episode 0 ends in its own final observation, not episode 1's first
    np.testing.assert_array_equal(z["next_observations"][2], eps[0].states[3])
    np.testing.assert_array_equal(z["terminals"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(z["timeouts"], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(z["rewards"], [0, 0, 1, 0, 0])
    assert list(z["instructions"]) == ["open the top drawer"] * 3 + ["open the middle drawer"] * 2


def test_dataset_ids():
    from minari.dataset.minari_dataset import parse_dataset_id as minari_parse

    from qtbench.data.store import DatasetName, dataset_id

    assert parse_dataset_id("qtbench/pick_place/demos-default-v0") == DatasetName("pick_place", "demos", "default")
    assert parse_dataset_id("move_near/failures-large-scripted") == DatasetName("move_near", "failures", "large",
                                                                                 "scripted")
    name = parse_dataset_id("qtbench/all/mixed-small-policy0a1b2c3d-v0")
    assert (name.split, name.profile, name.source) == ("mixed", "small", "policy0a1b2c3d")
    assert dataset_id("drawer_open", "mixed") == "qtbench/drawer_open/mixed-default-bc-v0"
    assert dataset_id("drawer_open", "demos", "large", "scripted") == "qtbench/drawer_open/demos-large-v0"
    # Minari's own grammar: namespace/name-vN
    assert minari_parse(dataset_id("drawer_open", "failures", "small", "scripted")) == (
        "qtbench/drawer_open", "failures-small-scripted", 0)
    with pytest.raises(QtbenchError, match="use one of"):
        parse_dataset_id("qtbench/nope/demos-default-v0")
    with pytest.raises(QtbenchError, match="use one of"):
        parse_dataset_id("qtbench/drawer_open/demos-huge-v0")
    for bad in ("qtbench/drawer_open/best-v0", "qtbench/drawer_open/mixed-v0", "qtbench/drawer_open/demos-small-bc-v0"):
        with pytest.raises(QtbenchError, match="not a qtbench dataset id"):
            parse_dataset_id(bad)
    with pytest.raises(QtbenchError, match="unknown failure source"):
        dataset_id("drawer_open", "mixed", "small", "Bad-Source")


def test_episode_from_steps_stores_the_dataset_dtypes_and_rejects_non_finite_states():
    ep = Episode.from_steps("open the top drawer", 7, [[0.0], [1.0], [2.0]], [[0.5], [-0.5]], [0, 1],
                            [False, True], [False, False], style="careful")
    assert (ep.states.dtype, ep.actions.dtype, ep.rewards.dtype) == (np.float32, np.float32, np.float32)
    assert ep.terminations.dtype == bool and ep.truncations.dtype == bool
    assert (ep.length, ep.total_reward, ep.succeeded, ep.seed, ep.style) == (2, 1.0, True, 7, "careful")
    assert ep.observation_texts() == ["open the top drawer"] * 3
    with pytest.raises(RuntimeError, match="non-finite state"):
        Episode.from_steps("open the top drawer", 7, [[0.0], [np.nan]], [[0.5]], [0], [False], [True])
