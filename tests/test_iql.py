import math

import pytest
import torch
from baseline_toys import SPEC, check_protocol, toy_batch, toy_window

from qtbench.algorithms import algorithm_class
from qtbench.baselines.iql import IQL, IQLConfig, advantage_weights, expectile_loss


def test_registered_with_reference_defaults():
    assert algorithm_class("iql") is IQL
    c = IQL.config_class()
    assert (c.expectile, c.beta, c.max_weight, c.tau, c.learning_rate, c.batch_size) == (0.7, 3.0, 100.0, 0.005, 3e-4, 256)
    assert (c.dataset, c.history, c.n_step, c.hidden_dim, c.n_layers) == ("mixed", 1, 1, 256, 2)


def test_expectile_loss_by_hand():
    diff = torch.tensor([1.0, -2.0, 0.5])
    # weights 0.7 (diff >= 0), 0.3 (diff < 0): (0.7*1 + 0.3*4 + 0.7*0.25) / 3
    assert math.isclose(expectile_loss(diff, 0.7).item(), 2.075 / 3, rel_tol=1e-6)
    # expectile 0.5 is half the mean squared error
    assert math.isclose(expectile_loss(diff, 0.5).item(), 0.5 * (1 + 4 + 0.25) / 3, rel_tol=1e-6)


def test_advantage_weights_by_hand_and_clipped():
    w = advantage_weights(torch.tensor([-1.0, 0.0, 1.0, 2.0]), beta=3.0, max_weight=100.0)
    expected = torch.tensor([math.exp(-3), 1.0, math.exp(3), 100.0])  # exp(6) = 403 is clipped
    torch.testing.assert_close(w, expected)


def _constant(net, value: float) -> None:
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.fill_(value)


def test_update_losses_by_hand_with_constant_networks():
    """V = 0.4, Q = Qtarget = 0.7: targets r + discount * V(s'), expectile on Q - V."""
    torch.manual_seed(0)
    algo = IQL(SPEC, IQLConfig(hidden_dim=16, word_dim=8))
    _constant(algo.value, 0.4)
    _constant(algo.q, 0.7)
    _constant(algo.q_target, 0.7)
    batch = toy_batch(5, 1, torch.Generator().manual_seed(0))
    batch.nstep_return = torch.tensor([1.0, 0.0, 0.0, 0.5, 1.0])
    batch.bootstrap_discount = torch.tensor([0.0, 0.98, 0.9604, 0.98, 0.0])
    metrics = algo.update(batch)
    target = batch.nstep_return + batch.bootstrap_discount * 0.4
    assert math.isclose(metrics["q_loss"], 2 * ((0.7 - target) ** 2).mean().item(), rel_tol=1e-5)
    assert math.isclose(metrics["value_loss"], 0.7 * 0.3**2, rel_tol=1e-5)
    assert math.isclose(metrics["advantage_mean"], 0.3, rel_tol=1e-5)
    assert math.isclose(metrics["weight_mean"], math.exp(0.9), rel_tol=1e-5)


def test_antmaze_reward_shift_enters_the_td_target():
    """The IQL paper's sparse-reward recipe: the critic learns from r - 1 (1-step returns)."""
    import pytest

    from qtbench.errors import QtbenchError

    torch.manual_seed(0)
    algo = IQL(SPEC, IQLConfig(hidden_dim=16, word_dim=8, reward_shift=-1.0))
    _constant(algo.value, 0.4)
    _constant(algo.q, 0.7)
    _constant(algo.q_target, 0.7)
    batch = toy_batch(3, 1, torch.Generator().manual_seed(0))
    batch.nstep_return = torch.tensor([1.0, 0.0, 0.0])
    batch.bootstrap_discount = torch.tensor([0.0, 0.98, 0.98])
    metrics = algo.update(batch)
    target = torch.tensor([0.0, -1.0 + 0.98 * 0.4, -1.0 + 0.98 * 0.4])  # rewards 1 -> 0, 0 -> -1
    assert math.isclose(metrics["q_loss"], 2 * ((0.7 - target) ** 2).mean().item(), rel_tol=1e-5)
    with pytest.raises(QtbenchError, match="reward_shift=-1.0 needs n_step=1"):
        IQL(SPEC, IQLConfig(hidden_dim=16, word_dim=8, reward_shift=-1.0, n_step=3))


def test_instruction_word_order_changes_the_encoding():
    algo = IQL(SPEC, IQLConfig(hidden_dim=16, word_dim=8))
    window = toy_window(2, 1, torch.Generator().manual_seed(0))
    window.states[1] = window.states[0]
    window.instruction = torch.stack([torch.tensor([2, 3, 4, 5, 0]), torch.tensor([2, 5, 4, 3, 0])])
    features = algo.value.encode(window)
    assert not torch.allclose(features[:, 0], features[:, 1])


def test_protocol_and_bit_exact_resume():
    config = IQLConfig(hidden_dim=32, word_dim=8)
    check_protocol(lambda: IQL(SPEC, config), lambda g: toy_batch(16, 1, g), history=1)


def test_learns_to_prefer_the_successful_actions():
    """Half the data are scripted successes, half random failures: the policy should imitate the successes."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    algo = IQL(SPEC, IQLConfig(hidden_dim=64, word_dim=16, learning_rate=1e-3))
    test = toy_window(256, 1, torch.Generator().manual_seed(5))
    before = (torch.as_tensor(algo.act(test)) - test.actions[:, -1]).abs().mean()
    first = [algo.update(toy_batch(128, 1, g)) for _ in range(20)]
    for _ in range(300):
        last = algo.update(toy_batch(128, 1, g))
    after = (torch.as_tensor(algo.act(test)) - test.actions[:, -1]).abs().mean()
    assert last["q_loss"] < 0.5 * sum(m["q_loss"] for m in first) / len(first)
    assert after < 0.5 * before and after < 0.2


def test_distinct_instructions_is_exact_with_long_instructions():
    from qtbench.nets import distinct_instructions

    g = torch.Generator().manual_seed(0)
    table = torch.randint(1, 1000, (7, 30), generator=g)  # 10 bits a token: several packed keys
    table[3] = table[2]
    table[3, -1] += 1  # differs only in the last token
    tokens = table[torch.randint(0, 7, (200,), generator=g)]
    distinct, index = distinct_instructions(tokens)
    assert len(distinct) == len(torch.unique(tokens, dim=0))
    torch.testing.assert_close(distinct[index], tokens, rtol=0, atol=0)


def test_normalised_state_features_are_clipped():
    """A feature nearly constant in the data (std at the floor 1e-3) gives |z| = 1000 for a
    change of 1: the critics see it clipped at state_clip; state_clip 0 passes it through."""
    from dataclasses import replace

    from qtbench.algorithms.ranges import completed
    from qtbench.ensemble_mlp import ObsNet

    spec = replace(SPEC, state_mean=[0.0] * SPEC.state_dim, state_std=[1e-3] + [1.0] * (SPEC.state_dim - 1))
    window = toy_window(1, 1, torch.Generator().manual_seed(0))
    window.states[0, 0, :2] = torch.tensor([1.0, -4.0])
    net = dict(spec=spec, history=1, members=1, out_dim=1, hidden_dim=4, n_layers=1, word_dim=2, with_action=False)
    clipped = ObsNet(**net, state_clip=3.0).encode(window)[0, 0, :2]
    assert clipped.tolist() == [3.0, -3.0]
    assert ObsNet(**net, state_clip=0.0).encode(window)[0, 0, :2].tolist() == pytest.approx([1000.0, -4.0])
    assert IQLConfig().state_clip == 10.0
    assert completed(IQLConfig, {"expectile": 0.7})["state_clip"] == 0.0  # stored before the clip: ran without
