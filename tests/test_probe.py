"""Value probes: values() of q_transformer, iql and cql on hand-computed cases, the probe's
statistics on toys, and the `qtbench eval` / `qtbench probe` / `qtbench agreement` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qtbench.algorithms import ALGORITHMS, EnvSpecInfo, Window
from qtbench.cli import main
from qtbench.probe import calibration, episode_bootstrap, rank_scores, relevant_features, similar_pairs

SPEC = EnvSpecInfo(state_dim=3, action_dim=4, vocab_size=12, max_tokens=4, max_episode_steps=5)


def window(batch: int, history: int = 1) -> Window:
    return Window(
        states=torch.zeros(batch, history, 3), mask=torch.ones(batch, history, dtype=torch.bool),
        instruction=torch.ones(batch, 4, dtype=torch.long), actions=torch.zeros(batch, history, 4),
        returns_to_go=torch.zeros(batch, history), timesteps=torch.zeros(batch, history, dtype=torch.long),
    )


class FixedLogits(torch.nn.Module):
    """Q logits 0.1 * (i * n + b) - 1 for dimension i, bin b; remembers the bins fed in."""

    def __init__(self, action_dim: int, n_bins: int):
        super().__init__()
        self.table = 0.1 * torch.arange(action_dim * n_bins, dtype=torch.float32).view(action_dim, n_bins) - 1.0
        self.seen = None

    def forward(self, window, bins, n_tokens=None):
        self.seen = bins.clone()
        return self.table.expand(bins.shape[0], -1, -1)


def test_q_transformer_values_are_the_last_dimension_q_of_the_given_bins():
    from qtbench.q_transformer import QTransformer, QTransformerConfig

    qt = QTransformer(SPEC, QTransformerConfig(n_bins=4, d_model=8, n_layers=1, n_heads=1, history=1))
    qt.online = FixedLogits(4, 4)
    actions = torch.tensor([[-1.0, 0.1, 0.6, 0.9], [0.9, 0.9, -0.9, -0.9]])
    values = qt.values(window(2), actions)
    # bins of 4 over [-1, 1]: [0, 2, 3, 3] and [3, 3, 0, 0], fed in decoding order (the gripper
    # first); the last decoded dimension (dz) -> logits 0.1 * (12 + bin) - 1
    assert qt.online.seen.tolist() == [[3, 0, 2, 3], [0, 3, 3, 0]]
    assert values.tolist() == pytest.approx([1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-0.2))])
    assert qt.online.training  # back in training mode
    # every decoded dimension's Q of the fed bins: dimension i, bin b -> sigmoid(0.1 * (4 i + b) - 1)
    by_dim = qt.dimension_values(window(2), actions)
    expected = [[1 / (1 + np.exp(1 - 0.1 * (4 * i + b))) for i, b in enumerate(row)] for row in ([3, 0, 2, 3], [0, 3, 3, 0])]
    assert np.allclose(by_dim.numpy(), expected) and by_dim[:, -1].tolist() == pytest.approx(values.tolist())
    assert qt.decoding_order == [3, 0, 1, 2]


def test_q_transformer_values_match_the_networks_teacher_forced_q():
    from qtbench.algorithms.torch_utility import to_bins
    from qtbench.q_transformer import QTransformer, QTransformerConfig, dataset_values

    torch.manual_seed(0)
    qt = QTransformer(SPEC, QTransformerConfig(n_bins=8, d_model=8, n_layers=1, n_heads=1, history=1, amp="none"))
    actions = torch.rand(5, 4) * 2 - 1
    w = window(5)
    bins = to_bins(actions[:, [3, 0, 1, 2]], 8)  # decoding order: the gripper first
    expected = dataset_values(torch.sigmoid(qt.online(w, bins)), bins)[:, -1]
    assert torch.allclose(qt.values(w, actions), expected)


@pytest.mark.parametrize("module, cls, cfg", [("qtbench.baselines.iql", "IQL", "IQLConfig"),
                                              ("qtbench.baselines.cql", "CQL", "CQLConfig")])
def test_iql_and_cql_values_are_the_smaller_twin_q(module, cls, cfg):
    import importlib

    m = importlib.import_module(module)
    algo = getattr(m, cls)(SPEC, getattr(m, cfg)(hidden_dim=8, word_dim=4))
    algo.q = lambda w, a: torch.stack([a.sum(-1, keepdim=True), 2 * a[:, :1]])  # twins (2, B, 1)
    actions = torch.tensor([[0.5, 0.5, 0.0, 0.0], [-0.5, 0.1, 0.1, 0.1]])
    assert algo.values(window(2), actions).tolist() == pytest.approx([1.0, -1.0])  # min(1, 1), min(-0.2, -1)


def test_similar_pairs_take_the_nearest_failure_within_the_radius():
    states = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [0.9, 0.2], [5.0, 5.0]])
    is_demo = np.array([True, True, False, False, True])
    demo, fail, dist = similar_pairs(states, is_demo, radius=0.5)
    assert demo.tolist() == [0, 1] and fail.tolist() == [2, 3]  # row 4 has no failure state within 0.5
    assert dist == pytest.approx([0.1, np.hypot(0.1, 0.2)])
    assert [len(x) for x in similar_pairs(states, np.ones(5, bool), 1.0)] == [0, 0, 0]  # no failure rows


def test_rank_scores_and_calibration_by_hand():
    assert rank_scores(np.array([0.9, 0.5, 0.2]), np.array([0.8, 0.5, 0.3])).tolist() == [1.0, 0.5, 0.0]
    cal = calibration(np.array([0.05, 0.15, 0.12, 0.95, 1.0]), np.array([0.0, 1.0, 0.0, 1.0, 1.0]), bins=10)
    assert [b["count"] for b in cal["bins"]] == [1, 2, 2]  # 1.0 falls into the last bin
    assert cal["bins"][1]["bin"] == pytest.approx([0.1, 0.2])
    assert cal["bins"][1]["mean_predicted"] == pytest.approx(0.135) and cal["bins"][1]["mean_return"] == 0.5
    # gaps: |0.05 - 0| + 2 * |0.135 - 0.5| + 2 * |0.975 - 1|, over 5
    assert cal["mean_abs_gap"] == pytest.approx((0.05 + 2 * 0.365 + 2 * 0.025) / 5)
    # Unbounded values widen the range: [-3, 1] in 4 bins of width 1.
    wide = calibration(np.array([-3.0, -2.5, 0.5]), np.array([0.0, 0.0, 1.0]), bins=4)
    assert [(b["bin"], b["count"]) for b in wide["bins"]] == [([-3.0, -2.0], 2), ([0.0, 1.0], 1)]


def test_episode_bootstrap_resamples_whole_episodes():
    rng = np.random.default_rng(0)
    same = episode_bootstrap(np.array([0.5, 0.5, 0.5]), np.array([0, 0, 1]), rng)
    assert same["mean"] == 0.5 and same["ci95"] == [0.5, 0.5] and same["episodes"] == 2
    split = episode_bootstrap(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]), rng)
    assert split["ci95"][0] == 0.0 and split["ci95"][1] == 1.0  # two episodes: all-0 and all-1 resamples
    assert episode_bootstrap(np.zeros(0), np.zeros(0, np.int64), rng)["mean"] is None


def test_relevant_features_name_the_instructions_parts():
    from qtbench.envs import layout

    f = layout.FIELDS
    drawer = relevant_features("open the middle drawer").tolist()
    assert drawer == [0, 1, 2, 3, f["drawer_pos"].start + 1, *range(f["handle_pos"].start + 3, f["handle_pos"].start + 6)]
    near = relevant_features("move the red can near the orange").tolist()
    assert near == [0, 1, 2, 3, *range(f["object_pos"].start, f["object_pos"].start + 3),
                    *range(f["object_pos"].start + 6, f["object_pos"].start + 9)]


def test_checkpoint_cell_of_reference_and_ablation_runs(tmp_path):
    from qtbench.loaded_run import checkpoint_cell

    assert checkpoint_cell(tmp_path / "r" / "drawer_open" / "bc" / "seed1", tmp_path / "c") == \
        tmp_path / "c" / "drawer_open" / "bc" / "seed1"
    ablation = tmp_path / "r" / "ablations" / "q_transformer+n_step3" / "drawer_open" / "q_transformer" / "seed0"
    assert checkpoint_cell(ablation, tmp_path / "c") == \
        tmp_path / "c" / "ablations" / "q_transformer+n_step3" / "drawer_open" / "q_transformer" / "seed0"


@pytest.fixture
def cells(tmp_path, monkeypatch, small_datasets):
    """A Tiny (no values) and an IQL cell, trained a few steps on the small drawer_open data."""
    from test_train import Tiny

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setitem(ALGORITHMS, "tiny", f"{Tiny.__module__}:Tiny")
    base = ["run", "--task", "drawer_open", "--profile", "small", "--eval-episodes", "1",
            "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), "--no-progress"]
    for algo, steps in (("tiny", "4"), ("iql", "3")):
        assert main([*base, "--algo", algo, "--steps", steps]) == 0
    return tmp_path


def test_eval_and_probe_commands(cells, capsys):
    tiny = cells / "r" / "drawer_open" / "tiny" / "seed2"
    iql = cells / "r" / "drawer_open" / "iql" / "seed2"
    ckpt = ["--checkpoint-dir", str(cells / "c"), "--no-progress"]
    before = json.loads((tiny / "eval.json").read_text())
    capsys.readouterr()

    assert main(["eval", str(tiny), *ckpt]) == 0
    after = json.loads((tiny / "eval.json").read_text())
    assert after["success_rate"] == before["success_rate"] and after["train_steps"] == 4
    assert after["per_skill"]["drawer_open"]["stages"]["names"][-1] == "open"
    assert len(after["per_instruction"]["open the top drawer"]["furthest_stage"]) == 1
    assert "stage funnel" in capsys.readouterr().out

    assert main(["eval", str(tiny), "--horizon", "drawer_open=4", *ckpt]) == 0
    record = json.loads((tiny / "eval_horizon_drawer_open4.json").read_text())
    assert record["horizons"] == {"drawer_open": 4} and record["episodes"] == before["episodes"]
    assert json.loads((tiny / "eval.json").read_text()) == after  # the run's own record stays
    assert "time limits {'drawer_open': 4}" in capsys.readouterr().out
    for bad in (["--horizon", "drawer=4"], ["--horizon", "drawer_open=0"],
                ["--horizon", "drawer_open=4", "--from-stage", "pulled_half"]):
        assert main(["eval", str(tiny), *bad, *ckpt]) == 2

    assert main(["eval", str(tiny), "--from-stage", "pulled_half", *ckpt]) == 0
    record = json.loads((tiny / "eval_from_pulled_half.json").read_text())
    assert record["from_stage"] == "pulled_half" and record["episodes_total"] == 3
    assert record["episodes"] + record["demo_never_reached"] + record["demo_finished_first"] == 3
    assert "from stage pulled_half" in capsys.readouterr().out

    assert main(["eval", str(tiny), "--eval-episodes", "2", *ckpt]) == 2  # eval.json stays the run's own
    assert "use it with --from-stage" in capsys.readouterr().err
    assert main(["eval", str(tiny), "--from-stage", "lifted", *ckpt]) == 2
    assert "no skill of task drawer_open has a stage 'lifted'" in capsys.readouterr().err
    assert main(["eval", str(tiny), "--checkpoint-dir", str(cells / "nowhere")]) == 2
    assert "no checkpoint of" in capsys.readouterr().err

    assert main(["probe", str(tiny), *ckpt]) == 0
    assert "skipped: tiny learns no Q function" in capsys.readouterr().out and not (tiny / "probe.json").exists()
    assert main(["probe", str(iql), *ckpt]) == 0
    probe = json.loads((iql / "probe.json").read_text())
    assert probe["transitions"] == probe["transitions_in_dataset"] > 0
    assert probe["demo_actions"]["n"] + probe["failure_actions"]["n"] == probe["transitions"]
    assert probe["ranking"]["pairs"] <= probe["ranking"]["demo_transitions"]
    assert sum(b["count"] for b in probe["calibration"]["bins"]) == probe["transitions"]
    assert "smaller of the two online critics" in probe["value"]
    assert (iql / "probe.png").stat().st_size > 1000

    assert main(["agreement", str(tiny), *ckpt]) == 0
    agreement = json.loads((tiny / "agreement.json").read_text())
    assert [r["step"] for r in agreement["steps"]] == [0, 1, 2, 3, "later"]
    assert all(0.0 <= r["agree"] <= 1.0 for r in agreement["steps"]) and agreement["checkpoint_step"] == 4
    assert "its greedy motion against the demos' own" in capsys.readouterr().out


class ActionScore:
    """A fake value-based algorithm: Q(s, a) = a_0, greedy action 0."""

    def act(self, window) -> np.ndarray:
        return np.zeros((window.states.shape[0], 4), np.float32)

    def values(self, window, actions):
        """Q = the first action component."""
        return actions[:, 0]


def test_probe_on_a_toy_dataset_by_hand():
    from types import SimpleNamespace

    from qtbench.algorithms import AlgoConfig
    from qtbench.data import Episode, TransitionData
    from qtbench.envs import layout
    from qtbench.probe import probe_run

    def episode(success: bool, first: float, shift: float = 0.0) -> Episode:
        states = np.zeros((4, layout.STATE_DIM), np.float32)
        states[:, 0] = np.arange(4) * 0.1 + shift  # gripper x: the same path unless shifted
        return Episode.from_steps("open the top drawer", None, states, np.tile(np.float32([first, 0, 0, 0]), (3, 1)),
                                  np.float32([0, 0, 1 if success else 0]), np.array([0, 0, success], bool),
                                  np.array([0, 0, not success], bool))

    data = TransitionData.from_episodes([episode(True, 0.5), episode(True, 0.5), episode(False, -0.5),
                                         episode(False, 0.9, shift=50.0)])
    run = SimpleNamespace(algo_config=AlgoConfig(history=1, gamma=0.5), data=data, algorithm=ActionScore(),
                          config={"algo": "toy", "task": "drawer_open", "seed": 0}, checkpoint_step=1, device="cpu")
    result = probe_run(run, progress=False)
    assert result["demo_actions"]["mean"] == 0.5 and result["failure_actions"]["mean"] == pytest.approx(0.2)
    assert result["greedy_at_demo_states"]["mean"] == 0.0
    # Every demo state pairs with the unshifted failure episode's state at the same step (distance 0),
    # whose action (-0.5) scores below the demo's: the far episode's 0.9 is never compared.
    rank = result["ranking"]
    assert (rank["pairs"], rank["demo_transitions"], rank["median_distance"]) == (6, 6, 0.0)
    assert rank["fraction_demo_above"]["mean"] == 1.0
    # Q 0.5 for demo steps whose discounted returns are 0.25, 0.5, 1; Q -0.5 / 0.9 for return 0.
    bins = [(b["bin"], b["count"], b["mean_return"]) for b in result["calibration"]["bins"]]  # over [-0.5, 1]
    assert [(lo, n) for (lo, _), n, _ in bins] == [(pytest.approx(-0.5), 3), (pytest.approx(0.4), 6),
                                                   (pytest.approx(0.85), 3)]
    assert bins[1][2] == pytest.approx(1.75 / 3)


def test_probe_loads_a_run_made_with_frozen_settings(tmp_path, monkeypatch, small_datasets, capsys):
    """A run trained from settings frozen in tuned.json loads back with them (it once loaded
    with the algorithm's bare defaults and stopped at the checkpoint's config check)."""
    from qtbench import tuning

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_datasets))
    monkeypatch.setattr(tuning, "TUNED_FILE", tmp_path / "tuned.json")
    (tmp_path / "tuned.json").write_text(json.dumps({"iql": {"settings": {"expectile": 0.8}}}))
    common = ["--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "c"), "--no-progress"]
    assert main(["run", "--algo", "iql", "--task", "drawer_open", "--profile", "small", "--steps", "2",
                 "--eval-episodes", "1", *common]) == 0
    run = tmp_path / "r" / "drawer_open" / "iql" / "seed2"
    assert json.loads((run / "config.json").read_text())["algo_config"]["expectile"] == 0.8
    capsys.readouterr()
    assert main(["probe", str(run), *common[2:]]) == 0, capsys.readouterr().err
    assert (run / "probe.json").exists()


class GripperFirstScore(ActionScore):
    """A fake autoregressive Q that decodes the fingers first: until the last dimension its Q
    is 1 - gripper command (open looks best), the last scores the whole action (Q = gripper)."""

    decoding_order = [3, 0, 1, 2]

    def values(self, window, actions):
        return self.dimension_values(window, actions)[:, -1]

    def dimension_values(self, window, actions):
        g = actions[:, 3]
        return torch.stack([1 - g, 1 - g, 1 - g, g], dim=1)


class GripperLastScore(GripperFirstScore):
    """The same fake decoding in the env's order: Q = dx until the fingers, decoded last."""

    decoding_order = [0, 1, 2, 3]

    def dimension_values(self, window, actions):
        return torch.stack([actions[:, 0], actions[:, 0], actions[:, 0], actions[:, 3]], dim=1)


@pytest.mark.parametrize("algorithm", [ActionScore(), GripperFirstScore(), GripperLastScore()])
def test_probe_at_the_demos_closing_steps(algorithm):
    from types import SimpleNamespace

    from qtbench.algorithms import AlgoConfig
    from qtbench.data import Episode, TransitionData
    from qtbench.envs import layout
    from qtbench.probe import closing_lines, probe_run

    def episode(success: bool, close_at: int) -> Episode:
        states = np.zeros((5, layout.STATE_DIM), np.float32)
        states[:, 0] = np.arange(5) * 0.1
        actions = np.tile(np.float32([0.5, 0, 0, -1]), (4, 1))
        actions[close_at:, 3] = 1.0
        return Episode.from_steps("pick the red can from the top drawer and place it on the counter", None, states, actions,
                                  np.float32([0, 0, 0, 1 if success else 0]), np.array([0, 0, 0, success], bool),
                                  np.array([0, 0, 0, not success], bool))

    data = TransitionData.from_episodes([episode(True, 2), episode(False, 1), episode(True, 3)])
    run = SimpleNamespace(algo_config=AlgoConfig(history=1), data=data, algorithm=algorithm,
                          config={"algo": "toy", "task": "pick_place", "seed": 0}, checkpoint_step=1, device="cpu")
    closing = probe_run(run, progress=False)["closing_step"]
    assert closing["transitions"] == 2  # the two demos' closing steps; the failure's is not a demo's
    if isinstance(algorithm, GripperLastScore):
        # the fingers are chosen on the last dimension, which prefers closing; dx (first) ties
        dims = closing["by_dimension"]
        assert dims["demo"] == [0.5, 0.5, 0.5, 1.0] and dims["fingers_open"] == [0.5, 0.5, 0.5, -1.0]
        assert dims["gripper_position"] == 3 and dims["gripper_dimension_demo_above"]["mean"] == 1.0
        assert "position 4 of 4" in "\n".join(closing_lines(closing))
    elif isinstance(algorithm, GripperFirstScore):
        # the whole action prefers closing (1 against -1), the fingers' own dimension opening (0 against 2)
        assert (closing["demo"]["mean"], closing["fingers_open"]["mean"]) == (1.0, -1.0)
        assert closing["fraction_demo_above"]["mean"] == 1.0
        dims = closing["by_dimension"]
        assert dims["demo"] == [0.0, 0.0, 0.0, 1.0] and dims["fingers_open"] == [2.0, 2.0, 2.0, -1.0]
        assert dims["gripper_position"] == 0 and dims["gripper_dimension_demo_above"]["mean"] == 0.0
        assert "0.000 -> 0.000 -> 0.000 -> 1.000" in "\n".join(closing_lines(closing))
    else:  # Q = dx, the same for both actions: ties count one half; no per-dimension values
        assert closing["fraction_demo_above"]["mean"] == 0.5 and "by_dimension" not in closing
        assert len(closing_lines(closing)) == 1
