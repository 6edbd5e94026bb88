import torch

from qtbench.algorithms.base import EnvSpecInfo, Window
from qtbench.nets import CausalTransformer, ContextTokens

SPEC = EnvSpecInfo(state_dim=5, action_dim=4, vocab_size=12, max_tokens=6, max_episode_steps=10)


def _window(batch=3, history=4):
    g = torch.Generator().manual_seed(0)
    instruction = torch.randint(2, 12, (batch, 6), generator=g)
    instruction[:, 4:] = 0
    mask = torch.ones(batch, history, dtype=torch.bool)
    mask[0, :2] = False
    return Window(
        states=torch.randn(batch, history, 5, generator=g), mask=mask, instruction=instruction,
        actions=torch.zeros(batch, history, 4), returns_to_go=torch.zeros(batch, history),
        timesteps=torch.zeros(batch, history, dtype=torch.long),
    )


def test_padding_and_future_tokens_do_not_leak():
    torch.manual_seed(0)
    context, body = ContextTokens(SPEC, history=4, d_model=16), CausalTransformer(16, 2, 2)
    window = _window()
    out = body(*context(window))
    assert out.shape == (3, 10, 16) and torch.isfinite(out).all()
    # Changing a padded state or a later state must not change earlier outputs.
    window.states[0, 0] += 100.0
    window.states[1, 3] += 100.0
    out2 = body(*context(window))
    assert torch.allclose(out[0, 8:], out2[0, 8:], atol=1e-5)
    assert torch.allclose(out[1, :9], out2[1, :9], atol=1e-5)
    assert not torch.allclose(out[1, 9], out2[1, 9])
