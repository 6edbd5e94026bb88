import math

import pytest
import torch
from baseline_toys import SPEC, check_protocol, supervised_batch, toy_window
from torch.nn import functional as F

from qtbench.algorithms import algorithm_class
from qtbench.algorithms.torch_utility import to_bins
from qtbench.baselines.bc import BC, BCConfig

SMALL = dict(d_model=32, n_layers=1, n_heads=1, dropout=0.0, bins=16, amp="none")  # float32: exact hand-computed values


def test_registered_with_reference_defaults():
    assert algorithm_class("bc") is BC
    c = BC.config_class()
    assert (c.dataset, c.filtered, c.bins) == ("demos", False, 256)


def test_cross_entropy_targets_are_dataset_bins_with_teacher_forcing():
    """Each action token's logits are scored against that dimension's dataset bin, and the
    token for dimension i is conditioned on the dataset bins of dimensions < i (in decoding
    order: the gripper, then dx, dy, dz)."""
    torch.manual_seed(0)
    algo = BC(SPEC, BCConfig(history=1, **SMALL))
    batch = supervised_batch(3, 1, torch.Generator().manual_seed(0))
    target = algo.grid.bins(batch.window.actions[:, -1])  # decoding order: the gripper first
    assert torch.equal(target, to_bins(batch.window.actions[:, -1, [3, 0, 1, 2]], 16))
    logits = algo.policy.logits(batch.window, target[:, :-1])
    assert logits.shape == (3, 4, 16)
    expected = F.cross_entropy(logits.reshape(-1, 16), target.reshape(-1)).item()
    assert math.isclose(algo.update(batch)["loss"], expected, rel_tol=1e-5)
    # Changing the bin of the last dimension changes no logits; changing dimension 0's bin
    # changes the logits of dimensions 1.. but not of dimension 0.
    with torch.no_grad():
        base = algo.policy.logits(batch.window, target[:, :-1])
        moved = target[:, :-1].clone()
        moved[:, 0] = (moved[:, 0] + 5) % 16
        other = algo.policy.logits(batch.window, moved)
    torch.testing.assert_close(base[:, 0], other[:, 0])
    assert not torch.allclose(base[:, 1:], other[:, 1:])


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_protocol_and_bit_exact_resume(amp):
    config = BCConfig(history=2, d_model=32, n_layers=1, n_heads=2, dropout=0.1, bins=16, amp=amp)
    check_protocol(lambda: BC(SPEC, config), lambda g: supervised_batch(8, 2, g), history=2)


def test_reproduces_a_scripted_policy():
    """State-dependent first dimension, instruction-dependent (word order!) other dimensions."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    algo = BC(SPEC, BCConfig(history=1, learning_rate=3e-3, **SMALL))
    first = algo.update(supervised_batch(64, 1, g))["loss"]
    for _ in range(150):
        last = algo.update(supervised_batch(64, 1, g))["loss"]
    assert last < 0.1 * first
    test = toy_window(256, 1, torch.Generator().manual_seed(7))
    error = (torch.as_tensor(algo.act(test)) - test.actions[:, -1]).abs()
    close = error <= 1 / 16 + 1e-6  # within half a bin of the expert (16 bins)
    assert close[:, 1:].all()  # the instruction-dependent dimensions, always
    assert close[:, 0].float().mean() > 0.95  # sign(state[0]): only states near 0 may be missed
