import math

import numpy as np
import pytest
import torch
from baseline_toys import SPEC, check_protocol, supervised_batch, toy_batch, toy_window

from qtbench.algorithms import algorithm_class
from qtbench.baselines.decision_transformer import DecisionTransformer, DTConfig

SMALL = dict(d_model=32, n_layers=1, n_heads=1, dropout=0.0, amp="none")  # float32: exact hand-computed values


def _model(history: int = 3):
    torch.manual_seed(0)
    return DecisionTransformer(SPEC, DTConfig(history=history, **SMALL))


def test_registered_with_reference_defaults():
    assert algorithm_class("dt") is DecisionTransformer
    c = DecisionTransformer.config_class()
    assert (c.dataset, c.history, c.target_return, c.d_model, c.n_layers, c.n_heads) == ("mixed", 10, 1.0, 128, 3, 1)


def test_token_order_and_which_output_predicts_which_action():
    """Tokens are [words, (R_1, s_1, a_1), (R_2, s_2, a_2), (R_3, s_3, a_3)]; step h's action is
    read at s_h: it sees R_{<=h}, s_{<=h}, a_{<h}, and nothing later."""
    algo = _model(history=3)
    model = algo.model.eval()
    window = toy_window(2, 3, torch.Generator().manual_seed(0))
    tokens, ignore = model.tokens(window)
    assert tokens.shape[1] == 3 * 3 and ignore.shape == tokens.shape[:2]  # the words run apart (nets)
    base = model(window)
    for h in range(3):
        for field in ("returns_to_go", "states", "actions"):
            changed = toy_window(2, 3, torch.Generator().manual_seed(0))
            getattr(changed, field)[:, h] += 3.0
            moved = (model(changed) - base).abs().amax(dim=(0, 2)) > 1e-5  # per predicted step
            first_affected = h + 1 if field == "actions" else h
            assert moved.tolist() == [step >= first_affected for step in range(3)], (field, h)


def test_act_reads_the_current_return_to_go_and_ignores_the_current_action_row():
    algo = _model(history=2)
    window = toy_window(4, 2, torch.Generator().manual_seed(0))
    base = algo.act(window)
    with torch.no_grad():  # acting computes only the current step: same as the full forward's last
        np.testing.assert_allclose(base, algo.model(window)[:, -1].numpy(), atol=1e-6)
    window.actions[:, -1] = 0.7
    np.testing.assert_array_equal(algo.act(window), base)
    window.returns_to_go[:, -1] = 0.0
    assert not np.allclose(algo.act(window), base)


def test_loss_is_mse_over_valid_steps_only():
    algo = _model(history=3)
    batch = supervised_batch(4, 3, torch.Generator().manual_seed(0))
    batch.window.mask[:2, 0] = False  # two windows start at the episode's second step
    batch.window.actions[:2, 0] = 100.0  # garbage in padding must not count
    with torch.no_grad():
        predicted = algo.model.train()(batch.window)
    errors = [
        (predicted[i, h] - batch.window.actions[i, h]).square().sum().item()
        for i in range(4) for h in range(3) if batch.window.mask[i, h]
    ]
    expected = sum(errors) / (len(errors) * 4)
    assert math.isclose(algo.update(batch)["loss"], expected, rel_tol=1e-5)


def test_rollout_windows_drive_the_return_to_go():
    """The evaluator's windows: target return 1.0 at the start, minus rewards received."""
    from qtbench.data import RolloutWindows
    from qtbench.envs.instructions import MAX_TOKENS, VOCABULARY

    from qtbench.algorithms.base import EnvSpecInfo

    spec = EnvSpecInfo(state_dim=6, action_dim=4, vocab_size=len(VOCABULARY), max_tokens=MAX_TOKENS, max_episode_steps=20)
    torch.manual_seed(0)
    algo = DecisionTransformer(spec, DTConfig(history=3, target_return=1.0, **SMALL))
    rollout = RolloutWindows(2, 3, 6, 4, target_return=algo.config.target_return)
    rollout.start(np.arange(2), np.zeros((2, 6), np.float32), ["open the top drawer", "close the top drawer"])
    actions = algo.act(rollout.window().to_torch())
    rollout.record(actions, np.array([0.0, 1.0]), np.ones((2, 6), np.float32))
    window = rollout.window()
    np.testing.assert_array_equal(window.returns_to_go[:, -1], [1.0, 0.0])
    assert algo.act(window.to_torch()).shape == (2, 4)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_protocol_and_bit_exact_resume(amp):
    config = DTConfig(history=3, d_model=32, n_layers=1, n_heads=2, dropout=0.1, amp=amp)
    check_protocol(lambda: DecisionTransformer(SPEC, config), lambda g: toy_batch(8, 3, g), history=3)


def test_return_conditioning_selects_the_successful_behaviour():
    """Trained on scripted successes (return 1) and random failures (return 0): asking for
    return 1 reproduces the script, asking for 0 does not."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    algo = DecisionTransformer(SPEC, DTConfig(history=3, learning_rate=3e-3, warmup_steps=1, **SMALL))
    first = algo.update(toy_batch(64, 3, g))["loss"]
    for _ in range(200):
        last = algo.update(toy_batch(64, 3, g))["loss"]
    assert last < 0.5 * first
    test = toy_window(256, 3, torch.Generator().manual_seed(3))
    expert = test.actions[:, -1]
    success = (torch.as_tensor(algo.act(test)) - expert).abs().mean()
    test.returns_to_go[:] = 0.0
    failure = (torch.as_tensor(algo.act(test)) - expert).abs().mean()
    assert success < 0.1 and failure > 3 * success
