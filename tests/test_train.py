"""The training loop: seeding, resume equivalence, metrics continuity, NaN stop, Ctrl-C,
checkpoint compatibility and config overrides (with a tiny in-file algorithm)."""

from __future__ import annotations

import csv
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qtbench import checkpoint
from qtbench.algorithms.base import AlgoConfig
from qtbench.data import Episode, TransitionData, WindowSampler
from qtbench.errors import QtbenchError
from qtbench.results import EpisodeOutcome, curve_point, run_root
from qtbench.train import (
    RunSpec,
    _initial_state,
    curve_steps,
    resolve_config,
    seed_everything,
    train,
    typed_overrides,
)


@dataclass
class TinyConfig(AlgoConfig):
    batch_size: int = 8
    history: int = 2
    learning_rate: float = 1e-2
    hidden: int = 8
    noise: float = 0.1  # input noise drawn from torch's global RNG: resume must restore it
    conservative: bool = True
    scales: tuple[float, ...] = (1.0, 2.0)
    nan_at: int = -1  # update number whose loss is reported as NaN
    interrupt_at: int = -1  # update number that sends this process interrupt_signal
    interrupt_signal: str = "SIGINT"
    sleep: float = 0.0  # seconds each update takes at least (for checkpoint timing tests)


class Tiny:
    """Regresses the dataset action from the current state; implements the protocol."""

    config_class = TinyConfig
    default_steps = 3000
    display_rank = 5  # after every real algorithm
    headline = False

    def __init__(self, spec, config: TinyConfig, device: str = "cpu"):
        self.config = config
        self.net = nn.Sequential(nn.Linear(spec.state_dim, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, spec.action_dim))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        self.updates = 0

    def update(self, batch) -> dict[str, float]:
        time.sleep(self.config.sleep)
        x = batch.window.states[:, -1]
        x = x + self.config.noise * torch.randn_like(x)
        loss = ((self.net(x) - batch.window.actions[:, -1]) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        if self.updates == self.config.interrupt_at:
            signal.raise_signal(getattr(signal, self.config.interrupt_signal))
        if self.updates == self.config.nan_at:
            return {"loss": float("nan")}
        return {"loss": loss.item(), "reward_mean": float(batch.reward.mean())}

    @torch.no_grad()
    def act(self, window) -> np.ndarray:
        return torch.tanh(self.net(window.states[:, -1])).numpy()

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, state) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.updates = state["updates"]


def synthetic_data(num_episodes: int = 6, seed: int = 0) -> TransitionData:
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(num_episodes):
        length = 4 + e % 3
        rewards = np.zeros(length, np.float32)
        rewards[-1] = float(e % 2 == 0)
        episodes.append(Episode.from_steps(
            "open the top drawer", None,
            states=rng.normal(size=(length + 1, 3)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(length, 4)).astype(np.float32),
            rewards=rewards,
            terminations=rewards > 0,
            truncations=np.arange(length) == length - 1 if e % 2 else np.zeros(length, bool),
        ))
    return TransitionData.from_episodes(episodes, max_episode_steps=8)


def random_curve(step: int, train_seconds: float) -> dict:
    """A learning-curve evaluation that draws from torch's global RNG (as a stochastic policy
    or dropout would): the training loop must keep it from shifting the training RNG."""
    outcomes = [EpisodeOutcome("open the top drawer", "drawer_open", bool(torch.rand(()) < 0.5)) for _ in range(4)]
    return curve_point(step, train_seconds, 0.0, outcomes)


def run_tiny(tmp_path, steps: int, resume: bool = False, seed: int = 0, checkpoint_seconds: float = 0.0,
             curve: bool = False, fingerprint: str = "sha256:aaaa", **config):
    """Train Tiny like run_cell does (seed, build, maybe resume); returns (algo, outcome).

    With ``curve``, 4 learning-curve points are evaluated by ``random_curve``; ``fingerprint``
    stands for the content hash of the datasets trained on."""
    spec = RunSpec(algo="tiny", task="drawer_open", seed=seed, steps=steps, resume=resume,
                   log_every=5, checkpoint_every=10, checkpoint_seconds=checkpoint_seconds, progress=False,
                   curve_points=4)
    cfg = TinyConfig(**config)
    cfg_dict = checkpoint.normalise_config(cfg.__dict__)
    ckpt_dir, out_dir = tmp_path / "ckpt", tmp_path / "out"
    record = {"fingerprint": fingerprint}
    state = _initial_state(spec, ckpt_dir, cfg_dict, record)
    data = synthetic_data()
    sampler = WindowSampler(data, cfg.history, cfg.n_step, cfg.gamma)
    rng = seed_everything(seed)
    algo = Tiny(data.spec_info(), cfg)
    outcome = train(algo, sampler, rng, spec, cfg_dict, ckpt_dir, out_dir, state, random_curve if curve else None,
                    record)
    return algo, outcome


def metric_rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


def params(algo):
    return [p.detach().clone() for p in algo.net.parameters()]


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a, _ = run_tiny(tmp_path / "a", 15)
    b, _ = run_tiny(tmp_path / "b", 15)
    c, _ = run_tiny(tmp_path / "c", 15, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(c)))


def test_resume_reaches_the_uninterrupted_weights_and_metrics(tmp_path):
    full, full_out = run_tiny(tmp_path / "full", 32)
    # "Interrupt" after 12 steps (not a multiple of log_every or checkpoint_every) and resume.
    run_tiny(tmp_path / "split", 12)
    assert checkpoint.load(tmp_path / "split" / "ckpt").step == 12
    resumed, resumed_out = run_tiny(tmp_path / "split", 32, resume=True)
    assert resumed_out.steps == full_out.steps == 32
    assert all(torch.equal(x, y) for x, y in zip(params(full), params(resumed)))
    assert resumed.opt.state_dict()["state"][0]["step"] == full.opt.state_dict()["state"][0]["step"] == 32
    # metrics.csv continues with no gap and no duplicate: identical rows apart from wall time
    full_rows = metric_rows(tmp_path / "full" / "out" / "metrics.csv")
    assert [int(r["step"]) for r in full_rows] == [5, 10, 15, 20, 25, 30, 32]
    assert metric_rows(tmp_path / "split" / "out" / "metrics.csv") == full_rows


def test_curve_steps():
    assert curve_steps(3000, 5) == [600, 1200, 1800, 2400, 3000]
    assert curve_steps(32, 4) == [8, 16, 24, 32]
    assert curve_steps(3, 5) == [1, 2, 3]  # fewer steps than points: one point per step
    assert curve_steps(100, 0) == [] and curve_steps(0, 5) == []


def _timeless(points):
    return [{k: v for k, v in p.items() if not k.endswith("seconds")} for p in points]


def test_resume_refuses_a_checkpoint_trained_on_other_data(tmp_path):
    run_tiny(tmp_path, 12)
    assert checkpoint.load(tmp_path / "ckpt").data == {"fingerprint": "sha256:aaaa"}
    with pytest.raises(QtbenchError, match="other data than this run's") as err:
        run_tiny(tmp_path, 32, resume=True, fingerprint="sha256:bbbb")  # the datasets were regenerated
    assert "--force" in err.value.fix
    assert run_tiny(tmp_path, 32, resume=True)[1].steps == 32  # the same data resumes


def test_learning_curve_leaves_training_bit_exact_and_resumes(tmp_path):
    plain, _ = run_tiny(tmp_path / "plain", 32)
    full, full_out = run_tiny(tmp_path / "full", 32, curve=True)
    # the curve evaluations drew from torch's RNG, yet training took the very same steps
    assert all(torch.equal(x, y) for x, y in zip(params(plain), params(full)))
    assert [p["step"] for p in full_out.curve] == [8, 16, 24, 32]
    assert all(p["episodes"] == 4 for p in full_out.curve)
    # Ctrl-C at step 12 (after the first point, between checkpoints), then resumed
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "split", 32, curve=True, interrupt_at=12)
    assert [p["step"] for p in checkpoint.load(tmp_path / "split" / "ckpt").curve] == [8]
    resumed, resumed_out = run_tiny(tmp_path / "split", 32, resume=True, curve=True, interrupt_at=12)
    assert all(torch.equal(x, y) for x, y in zip(params(full), params(resumed)))
    assert _timeless(resumed_out.curve) == _timeless(full_out.curve)
    with open(tmp_path / "split" / "out" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [8, 16, 24, 32]
    assert metric_rows(tmp_path / "split" / "out" / "metrics.csv") == metric_rows(tmp_path / "full" / "out" / "metrics.csv")


def test_checkpoint_holds_only_plain_data(tmp_path):
    run_tiny(tmp_path, 10)
    raw = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert raw["step"] == 10 and raw["algo"] == "tiny"
    assert raw["sampler_rng"]["bit_generator"] == "PCG64"
    assert [int(r["step"]) for r in raw["metrics"]] == [5, 10] and raw["pending_count"] == 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(QtbenchError, match="steps 16-20.*step 10"):  # read at the log after the NaN
        run_tiny(tmp_path, 30, nan_at=17)
    assert checkpoint.load(tmp_path / "ckpt").step == 10
    # resumed from step 10, a NaN before the next save still points at that checkpoint
    with pytest.raises(QtbenchError, match="steps 16-20.*step 10"):  # read at the log after the NaN
        run_tiny(tmp_path, 30, resume=True, nan_at=17)


@pytest.mark.parametrize("interrupt_signal", ["SIGINT", "SIGTERM"])  # Ctrl-C; kill or a scheduler
def test_interrupt_saves_a_consistent_checkpoint_and_resume_matches(tmp_path, caplog, interrupt_signal):
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "split", 20, interrupt_at=7, interrupt_signal=interrupt_signal)
    assert checkpoint.load(tmp_path / "split" / "ckpt").step == 7
    assert "--resume" in caplog.text
    resumed, _ = run_tiny(tmp_path / "split", 20, resume=True, interrupt_at=7, interrupt_signal=interrupt_signal)
    full, _ = run_tiny(tmp_path / "full", 20, interrupt_at=-1, interrupt_signal=interrupt_signal)
    # interrupt_at is part of the config: the checkpoint check would refuse another value,
    # so compare against a run whose first 7 updates are identical
    assert all(torch.equal(x, y) for x, y in zip(params(full), params(resumed)))
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_resume_refuses_another_config_unless_forced(tmp_path):
    run_tiny(tmp_path, 10)
    with pytest.raises(QtbenchError, match=r"hidden: checkpoint 8 vs requested 16") as err:
        run_tiny(tmp_path, 20, resume=True, hidden=16)
    assert "--force" in str(err.value) and "--checkpoint-dir" in str(err.value)
    spec = RunSpec(algo="tiny", task="drawer_open", resume=True, force=True)
    assert _initial_state(spec, tmp_path / "ckpt", {"hidden": 16}, {}) is None
    other = RunSpec(algo="bc", task="drawer_open", resume=True)
    with pytest.raises(QtbenchError, match="from algorithm 'tiny', not 'bc'"):
        _initial_state(other, tmp_path / "ckpt", {}, {})


def test_resume_past_the_requested_steps_is_an_error(tmp_path):
    run_tiny(tmp_path, 20)
    with pytest.raises(QtbenchError, match="step 20, past the requested 10"):
        run_tiny(tmp_path, 10, resume=True)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a, _ = run_tiny(tmp_path / "a", 10, resume=True)
    b, _ = run_tiny(tmp_path / "b", 10)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))


def test_overrides_convert_to_field_types():
    cfg = resolve_config(TinyConfig, {"learning_rate": "5e-3", "hidden": "4", "conservative": "false",
                                      "scales": "0.5,3", "dataset": "demos", "n_step": 3})
    assert cfg.learning_rate == 5e-3 and cfg.hidden == 4 and cfg.conservative is False
    assert cfg.scales == (0.5, 3.0) and cfg.dataset == "demos" and cfg.n_step == 3
    assert resolve_config(TinyConfig, {}) == TinyConfig()


def test_overrides_reject_unknown_fields_and_bad_values():
    with pytest.raises(QtbenchError, match="no field 'mc_return'") as err:
        resolve_config(TinyConfig, {"mc_return": False})
    assert "learning_rate" in str(err.value) and "hidden" in str(err.value)
    with pytest.raises(QtbenchError, match="not a valid int"):
        resolve_config(TinyConfig, {"hidden": "many"})
    with pytest.raises(QtbenchError, match="not a valid bool"):
        resolve_config(TinyConfig, {"conservative": "maybe"})


def test_resume_command_reproduces_the_run():
    spec = RunSpec(algo="q_transformer", task="drawer_open", seed=2, steps=100,
                   overrides={"learning_rate": "1e-4"})
    cmd = spec.resume_command()
    assert cmd.startswith("qtbench run --algo q_transformer --task drawer_open --seed 2 --steps 100")
    assert "--set learning_rate=1e-4" in cmd and cmd.endswith("--resume")


def test_time_checkpoints_bound_the_loss_and_keep_the_trajectory(tmp_path, monkeypatch):
    saved = []
    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda d, state: (saved.append(state.step), real_save(d, state))[1])
    timed, _ = run_tiny(tmp_path / "timed", 30, checkpoint_seconds=0.1, sleep=0.02)
    # every update takes >= 0.02 s, so a checkpoint due every 0.1 s is at most 5 (+1) steps late
    assert len(saved) >= 6 and np.diff([0, *saved]).max() <= 6
    saved.clear()
    by_steps, _ = run_tiny(tmp_path / "steps", 30, sleep=0.02)
    assert saved == [10, 20, 30]
    # a checkpoint only reads the state: the trajectory is the one of a run that saved rarely
    assert all(torch.equal(x, y) for x, y in zip(params(timed), params(by_steps)))
    assert metric_rows(tmp_path / "timed" / "out" / "metrics.csv") == metric_rows(tmp_path / "steps" / "out" / "metrics.csv")


def test_resume_command_passes_base_dirs_and_every_setting():
    overrides = {"conservative": False, "scales": (0.5, 3.0), "learning_rate": 1e-4, "interrupt_signal": "SIG TERM"}
    spec = RunSpec(algo="tiny", task="drawer_open", steps=12, results_dir=run_root(Path("r"), "tiny", overrides),
                   checkpoint_dir=run_root(Path("c"), "tiny", overrides), overrides=overrides, profile="small",
                   eval_episodes_per_instruction=2, checkpoint_every=7, checkpoint_seconds=5.0, threads=None)
    argv = shlex.split(spec.resume_command())
    flags = {argv[i]: argv[i + 1] for i in range(2, len(argv) - 1) if argv[i].startswith("--")}
    assert flags["--results-dir"] == "r" and flags["--checkpoint-dir"] == "c"  # qtbench run adds ablations/<label>
    assert (flags["--eval-episodes"], flags["--checkpoint-every"], flags["--checkpoint-seconds"]) == ("2", "7", "5.0")
    assert (flags["--threads"], flags["--profile"], argv[-1]) == ("0", "small", "--resume")
    pairs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    assert typed_overrides(TinyConfig, pairs) == overrides  # the same typed config, so the same folder
    plain = RunSpec(algo="tiny", task="drawer_open", steps=12, overrides=overrides)  # no ablation folder: kept as is
    assert shlex.split(plain.resume_command())[argv.index("--results-dir") + 1] == "results"
