"""The data pipeline on real qtbench datasets (small profile, drawer_open; its collection
policy is BC with the small profile's 40-step budget): counts, determinism, the collection
policy's provenance, variants side by side, Minari's own loader, and bad input."""

from __future__ import annotations

import argparse
import dataclasses
import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qtbench.data import EVAL_SEED_OFFSET, TransitionData, WindowSampler, dataset_id, eval_seeds
from qtbench.data.profiles import PROFILES
from qtbench.data.store import dataset_dir, list_datasets, read_dataset
from qtbench.datasets import ensure_datasets, generate_datasets
from qtbench.envs.instructions import instructions_for
from qtbench.errors import QtbenchError

TASK = "drawer_open"
IDS = {split: dataset_id(TASK, split, "small") for split in ("demos", "failures", "mixed")}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One small generation (default failure source: the BC collection policy), shared by
    the read-only tests of this module."""
    path = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(path))
    made = generate_datasets(TASK, "small", seed=0, workers=1, progress=False)
    yield path, made.manifests
    mp.undo()


@pytest.fixture
def generated(root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root[0]))
    return root[1]


def test_counts_rewards_and_the_named_collection_policy(generated):
    small = PROFILES["small"]
    texts = [ins.text for ins in instructions_for(TASK)]
    demos, failures, mixed = (read_dataset(IDS[s]).episodes for s in ("demos", "failures", "mixed"))
    assert len(demos) == small.demos_per_instruction * len(texts)
    assert len(failures) == small.failures_per_instruction * len(texts)
    assert len(mixed) == len(demos) + len(failures)
    for ep in demos:
        assert ep.rewards[-1] == 1.0 and ep.terminations[-1] and ep.rewards[:-1].sum() == 0
    for ep in failures:
        assert ep.rewards.sum() == 0 and not ep.terminations.any() and ep.truncations[-1]
    for split, per_ins in (("demos", small.demos_per_instruction), ("failures", small.failures_per_instruction)):
        assert generated[split]["per_instruction"] == {t: per_ins for t in texts}
    policy = generated["mixed"]["collection_policy"]
    assert policy == generated["failures"]["collection_policy"]
    assert policy["algo"] == "bc" and policy["checkpoint"] == "qtbench/drawer_open/collection-policy-small"
    assert policy["weights_hash"].startswith("sha256:") and policy["step"] == small.collection_steps
    assert policy["training"]["trained_on"] == {"dataset_id": IDS["demos"],
                                                "content_hash": generated["demos"]["content_hash"]}
    assert policy["training"]["learner_seed"] == 10_000
    cell = generated["mixed"]["collectors"]["failures"]
    assert policy["success_rate"] == cell["discarded"] / cell["attempts"]
    styles = policy["per_attempted_style"]  # every attempt is scored against the style it attempted
    assert set(styles) <= {"grasp", "hook", "none"}
    assert sum(row["attempts"] for row in styles.values()) == cell["attempts"]
    assert sum(row["successes"] for row in styles.values()) == cell["discarded"]
    assert generated["mixed"]["failure_source"] == "bc" and generated["demos"]["failure_source"] is None


def test_seeds_are_disjoint_from_evaluation(generated):
    seeds = np.array(generated["mixed"]["episode_seeds"])
    assert len(set(seeds.tolist())) == len(seeds)
    assert seeds.max() < EVAL_SEED_OFFSET <= eval_seeds(5, run_seed=0).min()
    assert eval_seeds(3, 1).min() > eval_seeds(3, 0).max()


def test_training_view_of_generated_data(generated):
    data = TransitionData.load(TASK, "mixed", profile="small")
    assert data.num_transitions == generated["mixed"]["steps"]
    spec = data.spec_info()
    assert spec.state_dim == data.states.shape[1] and spec.action_dim == 4
    batch = WindowSampler(data, history=4, n_step=3, gamma=0.98).sample(32, np.random.default_rng(0))
    assert batch.window.states.shape == (32, 4, spec.state_dim)
    demos_only = TransitionData.load(TASK, "mixed", successful_only=True, profile="small")
    assert demos_only.num_episodes == generated["demos"]["episodes"]


def test_whole_pipeline_is_deterministic_across_runs_and_workers(generated, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    again = generate_datasets(TASK, "small", seed=0, workers=2, progress=False).manifests
    for split in ("demos", "failures", "mixed"):
        assert again[split]["content_hash"] == generated[split]["content_hash"]
    assert again["mixed"]["collection_policy"]["weights_hash"] == generated["mixed"]["collection_policy"]["weights_hash"]
    # what the bits depend on beyond the seed: the packages (torch trains the collection policy) and the CPU
    assert {"mujoco", "numpy", "torch"} <= set(generated["failures"]["versions"])
    assert "CPU cores" in generated["failures"]["machine"]


def test_variants_coexist_and_minari_reads_every_id(generated, tmp_path, monkeypatch):
    import shutil

    import minari

    shutil.copytree(dataset_dir(IDS["demos"]).parents[2], tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    scripted = generate_datasets(TASK, "small", seed=0, failures="scripted", progress=False).manifests
    assert scripted["demos"]["content_hash"] == generated["demos"]["content_hash"]
    assert scripted["failures"]["collectors"]["failures"]["collector"] == "autonomous"
    assert scripted["failures"]["collection_policy"] is None
    assert scripted["failures"]["regenerate"].endswith("--failures scripted")
    ids = list_datasets()
    assert ids == sorted([*IDS.values(), dataset_id(TASK, "failures", "small", "scripted"),
                          dataset_id(TASK, "mixed", "small", "scripted")])
    assert read_dataset(IDS["mixed"]).manifest["content_hash"] == generated["mixed"]["content_hash"]  # untouched
    assert sorted(minari.list_local_datasets()) == ids  # the collection-policy folder is not a dataset
    for did in ids:
        ds = minari.load_dataset(did)
        assert ds.total_episodes == read_dataset(did).manifest["episodes"]
        assert ds.storage.metadata["ref_max_score"] == 1 and ds.storage.metadata["code_permalink"]
        env = ds.recover_environment(eval_env=True)
        obs, _ = env.reset(seed=EVAL_SEED_OFFSET)
        obs, *_ = env.step(env.action_space.sample())
        assert obs["state"].shape == next(iter(ds.iterate_episodes())).observations["state"].shape[1:]


def tiny_bc_checkpoint(directory, seed):
    """An untrained, tiny BC policy saved the way the training loop saves checkpoints."""
    import dataclasses

    import torch

    from qtbench import checkpoint
    from qtbench.algorithms import algorithm_class

    torch.manual_seed(seed)
    cls = algorithm_class("bc")
    config = cls.config_class(d_model=16, n_layers=1, n_heads=2, bins=8, history=2)
    algo = cls(TransitionData.load(TASK, config.dataset, profile="small").spec_info(), config)
    checkpoint.save(directory, checkpoint.TrainState(
        algo="bc", algo_config=dataclasses.asdict(config), step=7, algorithm=algo.state_dict(),
        sampler_rng={}, torch_rng=torch.get_rng_state(),
    ))
    return directory


def test_failures_come_from_the_named_checkpoint(generated, tmp_path):
    first = generate_datasets(TASK, "small", 0, autonomous_policy=tiny_bc_checkpoint(tmp_path / "a", 1),
                              progress=False, resume=True).manifests
    again = generate_datasets(TASK, "small", 0, autonomous_policy=tmp_path / "a", progress=False,
                              resume=True).manifests
    other = generate_datasets(TASK, "small", 0, autonomous_policy=tiny_bc_checkpoint(tmp_path / "b", 2),
                              progress=False, resume=True).manifests
    policy = first["failures"]["collection_policy"]
    assert policy["checkpoint"] == str(tmp_path / "a") and policy["external"] and policy["step"] == 7
    assert first["failures"]["dataset_id"] == dataset_id(TASK, "failures", "small",
                                                          "policy" + policy["weights_hash"][7:15])
    assert f"--autonomous-policy {tmp_path / 'a'}" in first["failures"]["regenerate"]
    assert again["failures"]["content_hash"] == first["failures"]["content_hash"]
    assert other["failures"]["dataset_id"] != first["failures"]["dataset_id"]
    assert other["failures"]["content_hash"] != first["failures"]["content_hash"]
    assert all(ep.rewards.sum() == 0 for ep in read_dataset(first["failures"]["dataset_id"]).episodes)


class CoinEnv:
    """A stand-in env for collection: an episode succeeds (reward 1, terminated at step 2)
    when its reset seed is even, and is truncated without reward at step 3 otherwise."""

    def __init__(self):
        import gymnasium as gym

        self.observation_space = gym.spaces.Dict(state=gym.spaces.Box(-1, 1, (2,), np.float32))
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, seed, options):
        self.win, self.t, self.text = seed % 2 == 0, 0, options["instruction"]
        return {"state": np.array([seed % 2, 0], np.float32), "instruction": self.text}, {}

    def step(self, action):
        self.t += 1
        done = self.win and self.t == 2
        obs = {"state": np.array([self.win, self.t], np.float32), "instruction": self.text}
        return obs, float(done), done, not self.win and self.t == 3, {"success": done}

    def close(self):
        pass


def test_no_success_leaks_and_kept_failures_do_not_depend_on_batching(monkeypatch):
    import qtbench.envs
    import qtbench.envs.attempts
    from qtbench.collection_policy import TrainedPolicy, collect_failures
    from qtbench.data.generate import make_units

    class Zero:
        def act(self, window):
            return np.zeros((window.states.shape[0], 4), np.float32)

    monkeypatch.setattr(qtbench.envs, "make_env", lambda task: CoinEnv())
    monkeypatch.setattr(qtbench.envs.attempts, "attempted_style", lambda ins, states: None)  # no qtbench layout
    policy = TrainedPolicy(Zero(), "zero", 1, 1.0, "none", 0, "sha256:0")
    units = make_units(TASK, "default", 0, "failures")
    runs = [collect_failures(units, policy, num_envs=n, progress=False) for n in (1, 7, 64)]
    for results in runs:
        for res in results:
            assert len(res.episodes) == res.unit.target
            assert all(ep.seed % 2 == 1 and ep.rewards.sum() == 0 for ep in res.episodes)
            assert res.discarded > 0 and res.discarded + len(res.episodes) + res.surplus == res.attempts
    kept = [[[int(ep.seed) for ep in res.episodes] for res in results] for results in runs]
    assert kept[0] == kept[1] == kept[2]


def test_resume_reuses_the_demos_and_the_trained_policy(generated, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(dataset_dir(IDS["demos"]).parents[2], tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for split in ("failures", "mixed"):  # as if killed after training the collection policy
        shutil.rmtree(dataset_dir(IDS[split]))
    policy_file = tmp_path / "qtbench" / TASK / "collection-policy-small" / "last.pt"
    before = policy_file.stat().st_mtime_ns
    ensure_datasets(TASK, "small", seed=0)
    assert policy_file.stat().st_mtime_ns == before  # not trained again
    for split in ("failures", "mixed"):
        assert read_dataset(IDS[split]).manifest["content_hash"] == generated[split]["content_hash"]
    with pytest.raises(QtbenchError, match="generated with seed 0, but seed 1"):
        ensure_datasets(TASK, "small", seed=1)


def test_failures_of_a_collection_policy_trained_otherwise_are_refused(generated, monkeypatch):
    """After an upgrade changes bc's defaults, the stored failures are no longer the default
    pipeline's: `qtbench run` says so and prints the command that regenerates them."""
    import qtbench.train

    ensure_datasets(TASK, "small", seed=0)  # as generated: accepted
    defaults = qtbench.train.resolve_config
    monkeypatch.setattr(qtbench.train, "resolve_config",
                        lambda cls, overrides: dataclasses.replace(defaults(cls, overrides), dropout=0.3))
    with pytest.raises(QtbenchError, match=r"other settings than bc's defaults of this version \(dropout differ\)") as err:
        ensure_datasets(TASK, "small", seed=0)
    assert f"qtbench data generate --task {TASK} --profile small --seed 0" in err.value.fix


def test_cli_commands_and_bad_input(generated, tmp_path, capsys):
    from qtbench.cli import data as data_cli
    from qtbench.cli import main

    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["data", *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    listing = run("list")
    assert IDS["failures"] in listing and "qtbench/drawer_open/collection-policy-small" in listing
    info = run("info", IDS["mixed"])
    assert "success fraction" in info and "collection-policy-small" in info
    failed = generated["failures"]["episodes"]  # the mixed dataset's only failed episodes
    assert f"drawer_open failed episodes ({failed}) attempted: " in info
    present = list_datasets()  # this module's other tests may have added variants
    assert run("verify").count("ok ") == len(present) >= 3
    out = tmp_path / "d.npz"
    run("export-d4rl", "drawer_open/mixed-small-bc", str(out))
    with np.load(out) as z:
        assert len(z["observations"]) == generated["mixed"]["steps"]
        assert z["terminals"].sum() == generated["demos"]["episodes"]
    capsys.readouterr()
    assert main(["data", "info", "qtbench/nope/demos-small-v0"]) == 2
    assert main(["data", "generate", "--task", TASK, "--profile", "small", "--failures", "learned"]) == 2
    assert "unknown failure source 'learned'" in capsys.readouterr().err
    assert main(["data", "generate", "--task", TASK, "--profile", "small",
                 "--autonomous-policy", str(tmp_path / "nothing")]) == 2
    assert "no training checkpoint" in capsys.readouterr().err
    assert list_datasets() == present  # nothing written by the failed commands


def test_units_and_seed_scheme():
    from qtbench.data.generate import make_units
    from qtbench.data.seeds import collection_seed, episode_seed

    units = make_units("all", "default", 0, "demos", instructions=4)
    every = [ins.text for ins in instructions_for("all")]
    assert [u.instruction for u in units] == [every[0], every[16], every[33], every[49]]
    assert [u.target for u in units] == [50] * 4
    assert [u.target for u in make_units("all", "large", 0, "failures", instructions=2)] == [50] * 2
    assert PROFILES["default"].demos_per_instruction == 2 * PROFILES["default"].failures_per_instruction
    a = episode_seed(TASK, "small", 0, "demos", every[0], 0)
    assert a == episode_seed(TASK, "small", 0, "demos", every[0], 0)
    assert a != episode_seed(TASK, "small", 0, "demos", every[0], 1)
    assert a != episode_seed(TASK, "small", 1, "demos", every[0], 0)
    assert collection_seed(0) not in (0, 1, 2)
    with pytest.raises(QtbenchError, match="use one of"):
        make_units(TASK, "huge", 0, "demos")


def _imports(path: Path) -> set[str]:
    """Every qtbench module a source file imports, function-level imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("qtbench")}


def test_no_import_cycle_through_the_data_package():
    """qtbench.data never reaches, through any chain of imports, a module that imports it
    back from outside the package (training, evaluation, the pipeline above them)."""
    package = Path(__import__("qtbench").__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = _imports(path)

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {m: {resolve(n) for n in deps} - {""} for m, deps in modules.items()}
    inside = {m for m in graph if m == "qtbench.data" or m.startswith("qtbench.data.")}
    seen, todo = set(), list(inside)
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    outside = seen - inside - {"qtbench"}
    back = sorted(m for m in outside if graph[m] & inside)
    assert not back, f"qtbench.data reaches {back}, which import qtbench.data back"
    assert "qtbench.train" not in seen and "qtbench.datasets" not in seen


def test_runs_record_their_data_and_rows_never_mix_data(generated, tmp_path, monkeypatch):
    from qtbench.algorithms import ALGORITHMS
    from qtbench.results import data_suffixes
    from qtbench.train import RunSpec, run_cell
    from test_train import Tiny

    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")
    out = run_cell(RunSpec(algo="tiny", task=TASK, steps=3, profile="small", results_dir=tmp_path / "r",
                           checkpoint_dir=tmp_path / "c", eval_episodes_per_instruction=1, progress=False))
    config, record = (json.loads((out / name).read_text()) for name in ("config.json", "eval.json"))
    assert config["data"] == record["data"]
    assert config["data"]["dataset_id"] == IDS["mixed"] and config["data"]["regime"] == "small-bc"
    assert config["data"]["content_hashes"] == {did: generated[s]["content_hash"] for s, did in IDS.items()}
    assert config["data"]["fingerprint"] == generated["mixed"]["content_hash"]

    def cfg(regime, fingerprint):
        return {"data": {"regime": regime, "fingerprint": "sha256:" + fingerprint}}

    same = [("t", cfg("default-bc", "aa")), ("t", cfg("default-bc", "aa"))]
    assert data_suffixes(same) == ["", ""]
    mixed = [("t", cfg("default-bc", "aa")), ("t", cfg("default-bc", "aa")), ("t", cfg("default-bc", "bb")),
             ("t", cfg("default-scripted", "cc")), ("t", {}), ("u", cfg("small-bc", "dd"))]
    assert data_suffixes(mixed) == ["", "", "@default-bc-bb", "@default-scripted-cc", "@unrecorded", ""]


def test_killed_collection_training_resumes_to_the_same_policy(generated, tmp_path, monkeypatch):
    """A generation killed while training the collection policy continues from its last
    checkpoint and ends with the weights of an uninterrupted training."""
    import functools
    import shutil

    import qtbench.train
    from qtbench.collection_policy import state_hash, train_collection_policy
    from qtbench.checkpoint import load

    shutil.copytree(dataset_dir(IDS["demos"]), tmp_path / "qtbench" / TASK / dataset_dir(IDS["demos"]).name)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(qtbench.train, "RunSpec", functools.partial(qtbench.train.RunSpec, checkpoint_every=10))
    build = qtbench.train.build_learner

    def killed_at_step_25(*args):
        algorithm, sampler, rng = build(*args)
        calls = iter(range(10**6))

        class Dying:
            def sample(self, *a):
                if next(calls) == 25:
                    raise KeyboardInterrupt
                return sampler.sample(*a)

        return algorithm, Dying(), rng

    monkeypatch.setattr(qtbench.train, "build_learner", killed_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        train_collection_policy(TASK, "small", 0, progress=False)
    directory = tmp_path / "qtbench" / TASK / "collection-policy-small"
    assert load(directory).step == 20
    monkeypatch.setattr(qtbench.train, "build_learner", build)
    train_collection_policy(TASK, "small", 0, progress=False)
    state = load(directory)
    assert state.step == PROFILES["small"].collection_steps
    assert state_hash(state.algorithm) == generated["mixed"]["collection_policy"]["weights_hash"]


def test_run_on_another_failure_source_writes_beside_the_reference_cell(tmp_path, monkeypatch):
    import qtbench.datasets
    import qtbench.train
    from qtbench.cli import run as run_cli

    calls = []
    monkeypatch.setattr(qtbench.datasets, "ensure_datasets", lambda *args, **kwargs: calls.append(args))

    def stop(spec):
        calls.append(spec)
        raise QtbenchError("stop here")

    monkeypatch.setattr(qtbench.train, "run_cell", stop)
    parser = argparse.ArgumentParser()
    run_cli.register(parser.add_subparsers(dest="command"))
    with pytest.raises(QtbenchError):
        run_cli.cmd_run(parser.parse_args(["run", "--algo", "bc", "--task", TASK, "--failures", "scripted",
                                       "--results-dir", str(tmp_path / "r")]))
    assert calls[0] == (TASK, "default", 0, "scripted")
    assert calls[1].failures == "scripted" and calls[1].results_dir == tmp_path / "r" / "failures-scripted"


def test_the_collection_policy_is_evaluated_on_the_runs_episodes(generated, tmp_path):
    """eval-policy scores the checkpoint that collected the failures on each run seed's own
    evaluation episodes, and the leaderboard lists it."""
    from qtbench.collection_policy import evaluate_collection_policy, load_trained_policy, policy_dir
    from qtbench.evaluate import evaluate_policy
    from qtbench.leaderboard import collection_policy_table

    path = evaluate_collection_policy(TASK, "small", 0, [0, 1], 2, tmp_path, progress=False)
    record = json.loads(path.read_text())
    assert path == tmp_path / TASK / "collection_policy.json"
    assert record["policy"]["weights_hash"] == generated["failures"]["collection_policy"]["weights_hash"]
    assert sorted(record["seeds"]) == ["0", "1"] and record["seeds"]["1"]["episodes"] == 2 * len(instructions_for(TASK))
    policy = load_trained_policy(policy_dir(TASK, "small"), TASK, "small")
    outcomes, _ = evaluate_policy(policy.act, TASK, policy.history, 2, 1, progress=False)
    assert sum(o.success for o in outcomes) == sum(
        r["successes"] for r in record["seeds"]["1"]["per_skill"].values())
    table = collection_policy_table(tmp_path)
    assert table.count("\n") == 2 and f"| {TASK} |" in table and "| 0, 1 |" in table
    assert collection_policy_table(tmp_path / "none") is None
    (tmp_path / "pick_place").mkdir()
    (tmp_path / "pick_place" / "collection_policy.json").write_text("{not json")
    assert collection_policy_table(tmp_path) == table  # a corrupt record is skipped with a warning
    # the multi-task policy's record on the same task gets its own row, below the task's own policy
    (tmp_path / TASK / "collection_policy_from_all.json").write_text(json.dumps({**record, "policy_task": "all"}))
    rows = collection_policy_table(tmp_path).splitlines()[2:]
    assert [r.split("|")[1:3] for r in rows] == [[f" {TASK} ", f" {TASK} "], [f" {TASK} ", " all "]]


def test_only_the_own_or_the_multi_task_collection_policy_is_evaluated_on_a_task(tmp_path):
    from qtbench.collection_policy import eval_record_name, evaluate_collection_policy

    assert eval_record_name("drawer_open", "drawer_open") == "collection_policy.json"
    assert eval_record_name("drawer_open", "all") == "collection_policy_from_all.json"
    with pytest.raises(QtbenchError, match="--policy-task all"):
        evaluate_collection_policy("drawer_open", "small", 0, [0], 1, tmp_path, policy_task="pick_place")
    assert not list(tmp_path.iterdir())


def test_where_the_collection_policys_failures_closed(generated):
    """Every failed episode of the collection policy gets one first-closure verdict."""
    from qtbench.headroom import closure_rows

    (row,) = closure_rows(TASK, "small")
    assert row[0] == TASK and row[1] == generated["failures"]["episodes"]
    assert sum(int(cell.split()[0]) for cell in row[2:6]) == row[1]
    assert closure_rows(TASK, "large") == []  # no such datasets here


def test_code_version_says_when_the_checkout_has_uncommitted_changes(tmp_path, monkeypatch):
    from qtbench import versions

    answers = {"rev-parse": "abc123\n", "status": ""}
    monkeypatch.setattr(versions.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, answers[cmd[1]], ""))
    assert versions.code_version().endswith("(git abc123)")
    answers["status"] = " M envs/plans.py\n"
    assert versions.code_version().endswith("(git abc123 plus uncommitted changes)")


def test_a_dataset_recorded_by_an_older_env_version_is_refused_and_the_printed_command_fixes_it(
        generated, tmp_path, monkeypatch):
    import shutil

    from qtbench.cli import main
    from qtbench.data.store import recorded_env_id
    from qtbench.envs import TASKS

    shutil.copytree(dataset_dir(IDS["demos"]).parents[2], tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert recorded_env_id(IDS["demos"]) == TASKS[TASK]
    metadata = dataset_dir(IDS["demos"]) / "data" / "metadata.json"
    old = TASKS[TASK].replace(TASKS[TASK].rsplit("-", 1)[1], "v0")
    metadata.write_text(metadata.read_text().replace(TASKS[TASK], old))
    with pytest.raises(QtbenchError, match=f"recorded by {old}, not by this version's {TASKS[TASK]}") as err:
        ensure_datasets(TASK, "small", seed=0)
    command = err.value.fix.split("regenerate it: ", 1)[1]
    assert main(command.split()[1:] + ["--no-progress"]) == 0
    assert read_dataset(IDS["demos"]).manifest["content_hash"] == generated["demos"]["content_hash"]
