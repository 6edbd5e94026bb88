"""Q-Transformer: per-dimension targets and regulariser against hand-computed numbers,
wiring of update(), bit-exact resume, and a tiny MDP solved exactly (the action grid and
greedy decoding are tested with the shared pieces, tests/test_torch_utility.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qtbench.algorithms.base import Batch, EnvSpecInfo, Window
from qtbench.errors import QtbenchError
from qtbench.algorithms.torch_utility import bin_centres, to_bins
from qtbench.q_transformer import (
    QTransformer,
    QTransformerConfig,
    conservative_penalty,
    dataset_values,
    td_loss,
    td_targets,
    total_loss,
)


T = torch.tensor


# ---- targets -----------------------------------------------------------------------------
def test_same_step_targets_have_no_reward_or_discount_and_last_keeps_the_reward():
    # B=1, A=3, n=2. Entry 0 of q_same is never used.
    q_same = T([[[0.99, 0.99], [0.2, 0.7], [0.4, 0.1]]])
    q_next = T([[0.3, 0.9]])
    got = td_targets(q_same, q_next, T([1.0]), T([0.98]), None)
    assert torch.allclose(got, T([[0.7, 0.4, 1.0 + 0.98 * 0.9]]))
    # Reward 0 and nothing to bootstrap from: the last target is 0, not the same-step max.
    got = td_targets(q_same, torch.zeros(1, 2), T([0.0]), T([0.98]), None)
    assert torch.allclose(got, T([[0.7, 0.4, 0.0]]))


def test_bootstrap_masked_at_termination_not_truncation():
    q_same = torch.zeros(2, 2, 3)
    q_next = T([[0.1, 0.8, 0.2], [0.1, 0.8, 0.2]])
    # Row 0 terminated (discount 0): target is the reward alone. Row 1 truncated: bootstraps.
    got = td_targets(q_same, q_next, T([1.0, 0.0]), T([0.0, 0.9]), None)
    assert torch.allclose(got[:, -1], T([1.0, 0.9 * 0.8]))


def test_n_step_target_uses_the_batch_return_and_discount():
    # 3-step: R = r0 + g r1 + g^2 r2 = 0 + 0 + 0.81 * 1, bootstrap gamma^3 = 0.729
    got = td_targets(torch.zeros(1, 1, 2), T([[0.5, 0.25]]), T([0.81]), T([0.729]), None)
    assert torch.allclose(got, T([[0.81 + 0.729 * 0.5]]))


def test_mc_bound_is_per_transition():
    q_same = T([[[0.0, 0.0], [0.2, 0.3]], [[0.0, 0.0], [0.6, 0.5]]])
    q_next = T([[0.1, 0.2], [0.7, 0.1]])
    mc = T([0.9, 0.1])
    got = td_targets(q_same, q_next, T([0.0, 0.0]), T([0.5, 0.5]), mc)
    # Row 0: [max(0.3, 0.9), max(0.5*0.2, 0.9)]; row 1 keeps its own larger targets.
    assert torch.allclose(got, T([[0.9, 0.9], [0.6, 0.35]]))


# ---- loss pieces -------------------------------------------------------------------------
def test_dataset_values_and_td_loss():
    q = T([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
    bins = T([[1, 2]])
    assert dataset_values(q, bins)[0].tolist() == pytest.approx([0.2, 0.6])
    # mean over batch and dimensions: ((0.2-0.0)^2 + (0.6-1.0)^2) / 2
    assert td_loss(dataset_values(q, bins), T([[0.0, 1.0]])).item() == pytest.approx(0.1)


def test_regulariser_masks_dataset_bins_and_averages_values():
    q = T([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
    bins = T([[1, 2]])
    # non-dataset values 0.1, 0.3 | 0.4, 0.5 -> mean of squares
    assert conservative_penalty(q, bins).item() == pytest.approx((0.01 + 0.09 + 0.16 + 0.25) / 4)


def test_regulariser_acts_on_values_not_logits():
    values = torch.sigmoid(torch.zeros(2, 4, 8))  # logits 0 = value 0.5, not the minimum
    assert conservative_penalty(values, torch.zeros(2, 4, dtype=torch.long)).item() == pytest.approx(0.25)


def test_regulariser_is_averaged_not_summed_over_bins():
    for n in (4, 256):
        q = torch.full((3, 4, n), 0.3)
        assert conservative_penalty(q, torch.zeros(3, 4, dtype=torch.long)).item() == pytest.approx(0.09)


def test_total_loss_weights():
    assert total_loss(T(0.4), T(0.2), 1.0).item() == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    assert total_loss(T(0.4), T(0.2), 3.0).item() == pytest.approx(0.5 * 0.4 + 0.5 * 3.0 * 0.2)
    assert total_loss(T(0.4), None, 1.0).item() == pytest.approx(0.2)


# ---- the algorithm on tiny sizes ---------------------------------------------------------
SPEC = EnvSpecInfo(state_dim=3, action_dim=3, vocab_size=10, max_tokens=5, max_episode_steps=20)
TINY = QTransformerConfig(n_bins=7, d_model=16, n_layers=2, n_heads=2, history=2, tau=0.1, batch_size=6,
                         amp="none")  # float32: the updates match the pure functions exactly


def _window(g: torch.Generator, b: int = 6, h: int = 2) -> Window:
    instruction = torch.randint(1, 10, (b, 5), generator=g)
    instruction[:, 3:] = 0
    mask = torch.ones(b, h, dtype=torch.bool)
    mask[0, 0] = False
    return Window(
        states=torch.randn(b, h, 3, generator=g), mask=mask, instruction=instruction,
        actions=torch.rand(b, h, 3, generator=g) * 2 - 1, returns_to_go=torch.zeros(b, h),
        timesteps=torch.zeros(b, h, dtype=torch.long),
    )


def _batch(seed: int = 0, b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        window=_window(g, b), reward=torch.zeros(b), mc_return=torch.rand(b, generator=g),
        nstep_return=torch.rand(b, generator=g).round(), next_window=_window(g, b),
        bootstrap_discount=torch.tensor([0.98, 0.0] * (b // 2)),
    )


def _algo(config: QTransformerConfig = TINY, seed: int = 0) -> QTransformer:
    torch.manual_seed(seed)
    return QTransformer(SPEC, config)


def test_backbone_last_is_exact():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    algo = _algo()
    window = _window(g)
    states, ignore = algo.online.context.states(window)
    seq = torch.cat([algo.online.context.words(window.instruction), states], dim=1)
    seq_ignore = torch.cat([window.instruction == 0, ignore], dim=1)
    full = algo.online.backbone(seq, seq_ignore)
    assert torch.allclose(algo.online.backbone(seq, seq_ignore, last=3), full[:, -3:], atol=1e-6)
    # (trimming padding and the instruction prefix: tests/test_nets.py)


def test_act_decodes_with_the_trained_network_and_heads():
    algo = _algo()
    algo.update(_batch())
    window = _window(torch.Generator().manual_seed(5))
    actions = algo.act(window)
    assert actions.dtype == np.float32 and actions.shape == (6, 3)
    assert np.all(np.abs(actions) < 1.0)
    bins = to_bins(torch.as_tensor(actions), TINY.n_bins)
    assert torch.allclose(bin_centres(bins, TINY.n_bins), torch.as_tensor(actions))
    # Teacher-forcing the chosen bins (in decoding order) through the training forward pass:
    # every chosen bin is the argmax of its own dimension's head given the earlier chosen bins.
    decoded = algo.grid.bins(torch.as_tensor(actions))
    with torch.no_grad():
        logits = algo.online(window, decoded)
    assert torch.equal(logits.argmax(-1), decoded)
    assert np.array_equal(algo.act(window), actions)  # no exploration noise


def test_update_matches_the_pure_functions_and_moves_the_target_by_tau():
    for conservative, mc in [(True, True), (False, False)]:
        config = dataclasses.replace(TINY, conservative=conservative, mc_return=mc)
        algo = _algo(config)
        batch = _batch(3)
        target_before = [p.clone() for p in algo.target.parameters()]
        bins = algo.grid.bins(batch.window.actions[:, -1])  # in decoding order (test_torch_utility)
        with torch.no_grad():
            q_same = torch.sigmoid(algo.target(batch.window, bins))
            q_next = torch.sigmoid(algo.target(batch.next_window, None, n_tokens=1))[:, 0]
            targets = td_targets(q_same, q_next, batch.nstep_return, batch.bootstrap_discount,
                                 batch.mc_return if mc else None)
            q = torch.sigmoid(algo.online(batch.window, bins))
            td = td_loss(dataset_values(q, bins), targets)
            expected = total_loss(td, conservative_penalty(q, bins) if conservative else None, config.alpha)
        metrics = algo.update(batch)
        assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-5)
        assert metrics["td_loss"] == pytest.approx(td.item(), rel=1e-5)
        assert (metrics["conservative"] > 0) == conservative
        for before, p_t, p in zip(target_before, algo.target.parameters(), algo.online.parameters()):
            assert torch.allclose(p_t, before + config.tau * (p - before), atol=1e-6)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_resume_is_bit_exact_and_checks_the_architecture(amp):
    config = dataclasses.replace(TINY, amp=amp)
    batches = [_batch(s) for s in range(4)]
    straight = _algo(config)
    for b in batches:
        straight.update(b)
    first = _algo(config)
    for b in batches[:2]:
        first.update(b)
    saved = first.state_dict()
    resumed = _algo(config, seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved)
    for b in batches[2:]:
        resumed.update(b)
    for a, b in zip(straight.state_dict()["online"].values(), resumed.state_dict()["online"].values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.state_dict()["target"].values(), resumed.state_dict()["target"].values()):
        assert torch.equal(a, b)
    other = QTransformer(SPEC, dataclasses.replace(TINY, d_model=8))
    with pytest.raises(QtbenchError, match="d_model"):
        other.load_state_dict(saved)


# ---- a tiny deterministic MDP ------------------------------------------------------------
def test_tiny_mdp_converges_to_the_optimal_q_values():
    """Two states, 2 action dims with 3 bins each, every action in the data.

    s0: action (2, 0) moves to s1 with reward 0; any other action ends the episode, reward 0.
    s1: a first bin of 1 ends the episode with reward 1, else with reward 0.
    Optimal: Q(s1, 1, .) = 1; Q(s0, 2, 0) = gamma; every other Q = 0, and the first
    dimension's values are the maxima over the second: Q(s0, .) = [0, 0, gamma], Q(s1, .) = [0, 1, 0].
    """
    gamma, n = 0.9, 3
    spec = EnvSpecInfo(state_dim=2, action_dim=2, vocab_size=3, max_tokens=1, max_episode_steps=2)
    config = QTransformerConfig(
        n_bins=n, d_model=32, n_layers=1, n_heads=2, history=1, gamma=gamma, learning_rate=3e-3,
        tau=0.1, conservative=False, mc_return=False, weight_decay=0.0,
        gripper_first=False,  # the values above are for decoding the dimensions in their order
    )
    torch.manual_seed(0)
    algo = QTransformer(spec, config)
    grid = torch.cartesian_prod(torch.arange(n), torch.arange(n))  # (9, 2)
    bins = torch.cat([grid, grid])
    state = torch.cat([torch.zeros(9, dtype=torch.long), torch.ones(9, dtype=torch.long)])
    to_s1 = (state == 0) & (bins[:, 0] == 2) & (bins[:, 1] == 0)
    reward = ((state == 1) & (bins[:, 0] == 1)).float()

    def window(s: torch.Tensor, b: torch.Tensor) -> Window:
        m = len(s)
        return Window(
            states=torch.nn.functional.one_hot(s, 2).float()[:, None], mask=torch.ones(m, 1, dtype=torch.bool),
            instruction=torch.ones(m, 1, dtype=torch.long), actions=bin_centres(b, n)[:, None],
            returns_to_go=torch.zeros(m, 1), timesteps=torch.zeros(m, 1, dtype=torch.long),
        )

    batch = Batch(
        window=window(state, bins), reward=reward, mc_return=reward.clone(), nstep_return=reward,
        next_window=window(torch.where(to_s1, 1, state), bins),
        bootstrap_discount=torch.where(to_s1, gamma, 0.0),
    )
    for _ in range(400):
        algo.update(batch)
    with torch.no_grad():
        q = torch.sigmoid(algo.online(batch.window, bins))  # (18, 2, n)
    optimal_last = torch.zeros(18)
    optimal_last[to_s1] = gamma
    optimal_last[reward > 0] = 1.0
    assert torch.allclose(dataset_values(q, bins)[:, 1], optimal_last, atol=0.05)
    assert torch.allclose(q[0, 0], T([0.0, 0.0, gamma]), atol=0.05)
    assert torch.allclose(q[9, 0], T([0.0, 1.0, 0.0]), atol=0.05)
    greedy = to_bins(torch.as_tensor(algo.act(window(T([0, 1]), torch.zeros(2, 2, dtype=torch.long)))), n)
    assert greedy[0].tolist() == [2, 0] and greedy[1, 0].item() == 1


def test_reference_defaults_are_the_papers():
    cfg = QTransformerConfig()
    assert (cfg.n_bins, cfg.alpha, cfg.conservative, cfg.mc_return) == (256, 1.0, True, True)
    assert (cfg.batch_size, cfg.learning_rate, cfg.history, cfg.n_step) == (256, 3e-4, 4, 1)
