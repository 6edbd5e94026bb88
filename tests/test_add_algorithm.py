"""Adding an algorithm is one file: Toy below is defined here only, registered by name, and
`qtbench run`, `qtbench sweep` and `qtbench leaderboard` read its budget, its place in the
default sweep and its display order from its own class."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from qtbench.algorithms import ALGORITHMS, AlgoConfig
from qtbench.cli import main

from test_train import Tiny


@dataclass
class ToyConfig(AlgoConfig):
    batch_size: int = 8  # transitions per gradient step
    history: int = 1  # only the current step is read


class Toy:
    """Predicts the mean dataset action, whatever the state."""

    config_class = ToyConfig
    default_steps = 7  # a budget no other algorithm has
    display_rank = -1  # before Q-Transformer
    headline = True  # in the default sweep

    def __init__(self, spec, config: ToyConfig, device: str = "cpu"):
        self.config = config
        self.mean = torch.zeros(spec.action_dim, requires_grad=True)
        self.opt = torch.optim.SGD([self.mean], lr=0.1)

    def update(self, batch) -> dict[str, float]:
        loss = ((self.mean - batch.window.actions[:, -1]) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def act(self, window):
        return self.mean.detach().expand(window.states.shape[0], -1).numpy()

    def state_dict(self):
        return {"mean": self.mean.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state) -> None:
        with torch.no_grad():
            self.mean.copy_(state["mean"])
        self.opt.load_state_dict(state["opt"])


def test_a_toy_algorithm_defined_in_one_file_runs_through_run_sweep_and_leaderboard(
        small_datasets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setitem(ALGORITHMS, "toy", f"{Toy.__module__}:Toy")
    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")
    results = tmp_path / "results"
    common = ["--task", "drawer_open", "--profile", "small", "--eval-episodes", "1",
              "--results-dir", str(results), "--checkpoint-dir", str(tmp_path / "ckpt")]

    assert main(["run", "--algo", "toy", *common]) == 0  # no --steps: the class's budget
    cell = results / "drawer_open" / "toy" / "seed2"  # the default seed: the first comparison seed
    assert json.loads((cell / "config.json").read_text())["default_steps"] == 7
    assert json.loads((cell / "eval.json").read_text())["train_steps"] == 7
    assert main(["run", "--algo", "tiny", "--steps", "7", *common]) == 0
    capsys.readouterr()

    assert main(["sweep", "--tasks", "drawer_open", "--seeds", "2", "--results-dir", str(results),
                 "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert [line.split("|")[1].strip() for line in plan.splitlines() if "| drawer_open |" in line] == [
        "q_transformer", "bc", "iql", "dt", "toy"]  # the headline algorithms in registry order; not tiny
    assert "| toy | drawer_open | 2 | finished" in plan

    assert main(["leaderboard", "--results-dir", str(results), "--benchmarks", str(tmp_path / "benchmarks.md"), "--no-plots"]) == 0
    table = (tmp_path / "benchmarks.md").read_text()
    # toy's display_rank (-1) puts it before tiny (5) although "tiny" sorts first by name.
    assert table.index("| drawer_open | `toy` |") < table.index("| drawer_open | `tiny` |")
