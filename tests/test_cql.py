import math

import torch
from baseline_toys import SPEC, check_protocol, supervised_batch, toy_batch, toy_window

from qtbench.algorithms import algorithm_class
from qtbench.baselines.cql import CQL, CQLConfig, conservative_gap, tanh_gaussian_sample

SMALL = dict(hidden_dim=32, word_dim=8, num_sampled=4)


def test_registered_with_reference_defaults():
    assert algorithm_class("cql") is CQL
    c = CQL.config_class()
    assert (c.learning_rate, c.actor_learning_rate, c.batch_size, c.tau, c.cql_alpha) == (3e-4, 1e-4, 256, 0.005, 1.0)
    assert (c.conservative, c.num_sampled, c.hidden_dim, c.n_layers, c.dataset) == (True, 10, 256, 2, "mixed")


def test_conservative_gap_by_hand():
    q_data = torch.tensor([0.5, -1.0])
    q_sampled = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    log_density = torch.tensor([[0.0, 0.0, math.log(2.0)], [-1.0, -1.0, -1.0]])
    gap = conservative_gap(q_data, q_sampled, log_density, temperature=1.0)
    # row 0: log(e^0 + e^1 + e^(2 - log 2)) - 0.5;  row 1: log(3 e^1) + 1
    expected = torch.tensor([math.log(1 + math.e + math.e**2 / 2) - 0.5, math.log(3) + 1 + 1])
    torch.testing.assert_close(gap, expected)
    gap2 = conservative_gap(q_data[:1], q_sampled[:1], log_density[:1], temperature=2.0)
    expected2 = 2 * math.log(1 + math.exp(0.5) + math.exp((2 - math.log(2)) / 2)) - 0.5
    assert math.isclose(gap2.item(), expected2, rel_tol=1e-6)


def test_tanh_gaussian_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std, noise = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g) * 0.5, torch.randn(5, 4, generator=g) * 2
    action, log_prob = tanh_gaussian_sample(mean, log_std, noise)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.transforms.TanhTransform()
    )
    torch.testing.assert_close(action, torch.tanh(mean + log_std.exp() * noise))
    torch.testing.assert_close(log_prob, reference.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1), rtol=1e-3, atol=1e-3)


def test_td_loss_by_hand_with_constant_critics():
    torch.manual_seed(0)
    algo = CQL(SPEC, CQLConfig(conservative=False, **SMALL))
    for net in (algo.q, algo.q_target):
        with torch.no_grad():
            net.out.weight.zero_()
            net.out.bias.fill_(0.6)
    batch = toy_batch(5, 1, torch.Generator().manual_seed(0))
    batch.nstep_return = torch.tensor([1.0, 0.0, 0.0, 0.5, 1.0])
    batch.bootstrap_discount = torch.tensor([0.0, 0.98, 0.9604, 0.98, 0.0])
    metrics = algo.update(batch)
    target = batch.nstep_return + batch.bootstrap_discount * 0.6
    assert math.isclose(metrics["td_loss"], 2 * ((0.6 - target) ** 2).mean().item(), rel_tol=1e-5)
    assert metrics["conservative_gap"] == 0.0 and metrics["alpha"] == 1.0


def test_sparse_reward_transform_enters_the_td_target():
    """CQL's AntMaze recipe: the critic learns from 4 * (r - 0.5) = 4 r - 2."""
    torch.manual_seed(0)
    algo = CQL(SPEC, CQLConfig(conservative=False, reward_scale=4.0, reward_shift=-2.0, **SMALL))
    for net in (algo.q, algo.q_target):
        with torch.no_grad():
            net.out.weight.zero_()
            net.out.bias.fill_(0.6)
    batch = toy_batch(3, 1, torch.Generator().manual_seed(0))
    batch.nstep_return = torch.tensor([1.0, 0.0, 0.0])
    batch.bootstrap_discount = torch.tensor([0.0, 0.98, 0.98])
    metrics = algo.update(batch)
    target = torch.tensor([2.0, -2.0 + 0.98 * 0.6, -2.0 + 0.98 * 0.6])
    assert math.isclose(metrics["td_loss"], 2 * ((0.6 - target) ** 2).mean().item(), rel_tol=1e-5)


def test_protocol_and_bit_exact_resume():
    config = CQLConfig(**SMALL)
    check_protocol(lambda: CQL(SPEC, config), lambda g: toy_batch(16, 1, g, bootstrap=0.5), history=1)


def _q_gap_data_vs_random(algo: CQL) -> float:
    """Mean Q at the dataset (scripted) actions minus mean Q at uniform random actions."""
    window = toy_window(256, 1, torch.Generator().manual_seed(9))
    random = torch.rand(256, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return (algo.q(window, window.actions[:, -1]) - algo.q(window, random)).mean().item()


def test_conservative_term_pushes_down_unseen_actions():
    """Only scripted actions in the data, all with return 1: plain TD has no reason to rank
    them above unseen actions; CQL must."""
    results = {}
    for conservative in (False, True):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        algo = CQL(SPEC, CQLConfig(conservative=conservative, learning_rate=1e-3, **SMALL))
        first = algo.update(supervised_batch(64, 1, g))["loss"]
        for _ in range(150):
            last = algo.update(supervised_batch(64, 1, g))
        results[conservative] = _q_gap_data_vs_random(algo)
        if conservative:
            assert last["loss"] < first
    assert results[True] > 0.3 and results[True] > results[False] + 0.2
