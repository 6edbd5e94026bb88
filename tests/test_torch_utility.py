"""The shared model pieces of qtbench.algorithms.torch_utility, against hand-computed values."""

from types import SimpleNamespace

import pytest
import torch
from baseline_toys import SPEC
from torch import nn

from qtbench.algorithms.base import EnvSpecInfo
from qtbench.algorithms.torch_utility import (
    STD_FLOOR,
    ActionGrid,
    StateNormalised,
    bin_centres,
    check_reward_transform,
    clamp_log_std,
    greedy_decode,
    polyak_update,
    relative_positions,
    shifted_return,
    to_bins,
)
from qtbench.errors import QtbenchError


def _linear(weight: float, bias: float) -> nn.Linear:
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return layer


def test_polyak_update_by_hand():
    target, source = _linear(1.0, 2.0), _linear(3.0, -2.0)
    polyak_update(target, source, tau=0.1)
    # 0.9 * 1 + 0.1 * 3 = 1.2 and 0.9 * 2 + 0.1 * (-2) = 1.6; the source is untouched
    assert target.weight.item() == pytest.approx(1.2) and target.bias.item() == pytest.approx(1.6)
    assert (source.weight.item(), source.bias.item()) == (3.0, -2.0)
    polyak_update(target, source, tau=0.1)  # 0.9 * 1.2 + 0.3 = 1.38, 0.9 * 1.6 - 0.2 = 1.24
    assert target.weight.item() == pytest.approx(1.38) and target.bias.item() == pytest.approx(1.24)
    assert target.weight.grad is None
    polyak_update(target, source, tau=1.0)  # tau 1 copies
    assert (target.weight.item(), target.bias.item()) == (3.0, -2.0)


class _Normalised(StateNormalised):
    def __init__(self, spec: EnvSpecInfo):
        super().__init__(spec)
        self.layer = nn.Linear(spec.state_dim, 1)


def test_state_normalisation_by_hand_with_floored_std():
    spec = EnvSpecInfo(state_dim=2, action_dim=1, vocab_size=3, max_tokens=2, max_episode_steps=5,
                       state_mean=(1.0, -2.0), state_std=(2.0, 0.0))
    net = _Normalised(spec)
    assert net.state_std.tolist() == pytest.approx([2.0, STD_FLOOR])  # a constant feature is not divided by 0
    states = torch.tensor([[[3.0, -2.0], [1.0, -1.5]]])  # (B, H, S)
    torch.testing.assert_close(net.normalise(states), torch.tensor([[[1.0, 0.0], [0.0, 500.0]]]))


def test_state_normalisation_without_statistics_is_the_identity():
    net = _Normalised(SPEC)  # no state_mean / state_std
    states = torch.randn(3, 2, SPEC.state_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.normalise(states), states, rtol=0, atol=0)


def test_state_normalisation_round_trips_through_the_state_dict_under_its_old_keys():
    spec = EnvSpecInfo(state_dim=2, action_dim=1, vocab_size=3, max_tokens=2, max_episode_steps=5,
                       state_mean=(1.0, -2.0), state_std=(2.0, 4.0))
    trained = _Normalised(spec)
    state = trained.state_dict()
    assert list(state) == ["state_mean", "state_std", "layer.weight", "layer.bias"]  # the keys checkpoints hold
    resumed = _Normalised(EnvSpecInfo(state_dim=2, action_dim=1, vocab_size=3, max_tokens=2, max_episode_steps=5))
    resumed.load_state_dict(state)
    states = torch.tensor([[5.0, 6.0]])
    torch.testing.assert_close(resumed.normalise(states), torch.tensor([[2.0, 2.0]]))


def test_relative_positions_by_hand():
    from qtbench.envs import layout

    state = torch.zeros(layout.STATE_DIM)
    state[layout.FIELDS["gripper_pos"].slice] = torch.tensor([0.1, -0.2, 0.3])
    handles = torch.zeros(3, 3)
    handles[1] = torch.tensor([0.1, 0.0, 0.35])  # the middle knob: 20 cm ahead (+y), 5 cm above
    state[layout.FIELDS["handle_pos"].slice] = handles.flatten()
    objects = torch.full((8, 3), 0.3)
    state[layout.FIELDS["object_pos"].slice] = objects.flatten()
    state[layout.FIELDS["named_pos"].slice] = torch.tensor([0.3, 0.3, 0.3, 0, 0, 0, 0.1, 0.0, 0.35])  # no target
    rel = relative_positions(state[None, None])  # (B, H, 3 * 14), in 10 cm units
    assert rel.shape == (1, 1, 42)
    rel = rel.reshape(14, 3)
    torch.testing.assert_close(rel[1], torch.tensor([0.0, 2.0, 0.5]))
    torch.testing.assert_close(rel[0], torch.tensor([-1.0, 2.0, -3.0]))  # the knob at the origin
    torch.testing.assert_close(rel[3:11], torch.tensor([2.0, 5.0, 0.0]).expand(8, 3))  # objects at (0.3, 0.3, 0.3)
    torch.testing.assert_close(rel[11:], torch.tensor([[2.0, 5.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.5]]))


def test_relative_positions_follow_the_normalised_state_on_qtbench_states_only():
    from qtbench.envs import layout

    spec = EnvSpecInfo(state_dim=layout.STATE_DIM, action_dim=4, vocab_size=3, max_tokens=2, max_episode_steps=5)
    net = StateNormalised(spec, relative=True)
    assert net.input_dim == layout.STATE_DIM + 42
    states = torch.randn(2, 4, layout.STATE_DIM, generator=torch.Generator().manual_seed(0))
    out = net.normalise(states)
    torch.testing.assert_close(out[..., : layout.STATE_DIM], states)  # no statistics: identity
    torch.testing.assert_close(out[..., layout.STATE_DIM:], relative_positions(states))
    other = StateNormalised(SPEC, relative=True)  # not qtbench's layout: nothing appended
    assert other.input_dim == SPEC.state_dim and not other.relative
    assert StateNormalised(spec).input_dim == layout.STATE_DIM  # off by default


def test_clamp_log_std_bounds_and_gradient():
    log_std = torch.tensor([-7.0, -5.0, 0.0, 2.0, 3.0], requires_grad=True)
    clamped = clamp_log_std(log_std)
    assert clamped.tolist() == [-5.0, -5.0, 0.0, 2.0, 2.0]
    clamped.sum().backward()
    assert log_std.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # no gradient pushes past a bound


def test_bins_by_hand():
    # 4 bins of width 0.5 over [-1, 1]: edges -1, -0.5, 0, 0.5, 1; 1.0 and beyond fall in the last
    actions = torch.tensor([-1.5, -1.0, -0.75, -0.5, 0.0, 0.49, 1.0, 1.5])
    assert to_bins(actions, 4).tolist() == [0, 0, 0, 1, 2, 2, 3, 3]
    centres = bin_centres(torch.arange(4), 4)
    assert centres.tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert torch.equal(to_bins(centres, 4), torch.arange(4))  # a centre lies in its own bin


def test_bins_round_trip_within_half_a_bin():
    n = 256
    assert torch.equal(to_bins(bin_centres(torch.arange(n), n), n), torch.arange(n))
    a = torch.linspace(-1, 1, 10001)
    err = (bin_centres(to_bins(a, n), n) - a).abs()
    assert err.max() <= 1.0 / n + 1e-6  # at most half a bin width (2/n / 2)


def test_action_grid_decodes_the_gripper_first_by_hand():
    actions = torch.tensor([[-1.0, -0.5, 0.5, 0.99]])  # 4 bins: -1 -> 0, -0.5 -> 1, 0.5 -> 3, 0.99 -> 3
    assert ActionGrid(4, 4, gripper_first=False).bins(actions).tolist() == [[0, 1, 3, 3]]
    grid = ActionGrid(4, 4, gripper_first=True)
    assert grid.order.tolist() == [3, 0, 1, 2]
    assert grid.bins(actions).tolist() == [[3, 0, 1, 3]]  # [gripper, dx, dy, dz]
    # back in the env's order [dx, dy, dz, gripper], at the bins' centres
    assert grid.actions(torch.tensor([[3, 0, 1, 2]])).tolist() == [[-0.75, -0.25, 0.25, 0.75]]


def test_greedy_decode_conditions_each_dimension_on_the_earlier_choices():
    """Dimension i's best bin is (row + sum of the bins chosen before i + 1) mod 5."""
    n_bins, seen = 5, []

    def scores_at(bins: torch.Tensor, i: int) -> torch.Tensor:
        seen.append(i)
        best = (torch.arange(bins.shape[0]) + bins[:, :i].sum(1) + 1) % n_bins
        return nn.functional.one_hot(best, n_bins).float()

    bins = greedy_decode(scores_at, batch_size=2, action_dim=3, device="cpu")
    # row 0: 1, then 0 + 1 + 1 = 2, then 0 + 3 + 1 = 4; row 1: 2, then 1 + 2 + 1 = 4, then 1 + 6 + 1 = 8 = 3 mod 5
    assert bins.tolist() == [[1, 2, 4], [2, 4, 3]]
    assert seen == [0, 1, 2]


def test_shifted_return_and_its_check():
    batch = SimpleNamespace(nstep_return=torch.tensor([1.0, 0.0]))
    assert shifted_return(batch, reward_scale=4.0, reward_shift=-2.0).tolist() == [2.0, -2.0]  # 4 * (r - 0.5)
    check_reward_transform(SimpleNamespace(reward_shift=-1.0, n_step=1))
    check_reward_transform(SimpleNamespace(reward_shift=0.0, n_step=3))
    with pytest.raises(QtbenchError, match="reward_shift=-1.0 needs n_step=1"):
        check_reward_transform(SimpleNamespace(reward_shift=-1.0, n_step=3))
