"""Tiny synthetic batches for the baseline algorithms' tests (no environment, no dataset).

The scripted "expert": the first action dimension is 0.5 * sign(state[0]); the others are a
constant that depends on the instruction, and instruction BACKWARD has the same words as
FORWARD in another order, so a policy must read the state and the word order to imitate it.
"""

from __future__ import annotations

import torch

from qtbench.algorithms.base import Batch, EnvSpecInfo, Window

SPEC = EnvSpecInfo(state_dim=6, action_dim=4, vocab_size=10, max_tokens=5, max_episode_steps=20)
FORWARD = torch.tensor([2, 3, 4, 5, 0])
BACKWARD = torch.tensor([2, 5, 4, 3, 0])  # same words, different order
FORWARD_ACTION = torch.tensor([0.0, 0.5, -0.5, 1.0])
BACKWARD_ACTION = torch.tensor([0.0, -0.5, 0.5, -1.0])


def scripted_action(states: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
    """states (B, H, S), instruction (B, L) -> actions (B, H, A)."""
    forward = (instruction == FORWARD).all(-1)[:, None, None]
    actions = torch.where(forward, FORWARD_ACTION, BACKWARD_ACTION).expand(*states.shape[:2], -1).clone()
    actions[..., 0] = 0.5 * torch.sign(states[..., 0])
    return actions


def toy_window(batch: int, history: int, generator: torch.Generator, scripted: bool = True) -> Window:
    states = torch.randn(batch, history, SPEC.state_dim, generator=generator)
    pick = torch.rand(batch, generator=generator) < 0.5
    instruction = torch.where(pick[:, None], FORWARD, BACKWARD)
    if scripted:
        actions = scripted_action(states, instruction)
    else:
        actions = torch.rand(batch, history, SPEC.action_dim, generator=generator) * 2 - 1
    mask = torch.ones(batch, history, dtype=torch.bool)
    timesteps = torch.arange(history).expand(batch, -1).clone()
    return Window(
        states=states, mask=mask, instruction=instruction, actions=actions,
        returns_to_go=torch.ones(batch, history), timesteps=timesteps,
    )


def toy_batch(batch: int, history: int, generator: torch.Generator, gamma: float = 0.98, bootstrap: float = 0.0) -> Batch:
    """A contextual bandit: scripted actions succeed (reward 1, terminal), random ones fail (reward 0).

    Failures bootstrap from a random next window with probability ``bootstrap``.
    """
    scripted = torch.rand(batch, generator=generator) < 0.5
    good = toy_window(batch, history, generator, scripted=True)
    bad = toy_window(batch, history, generator, scripted=False)
    window = Window(**{
        name: torch.where(scripted.view(-1, *([1] * (getattr(good, name).dim() - 1))), getattr(good, name), getattr(bad, name))
        for name in ("states", "mask", "instruction", "actions", "returns_to_go", "timesteps")
    })
    reward = scripted.float()
    window.returns_to_go = reward[:, None].expand(-1, history).clone()
    next_window = toy_window(batch, history, generator, scripted=False)
    return Batch(
        window=window, reward=reward, mc_return=reward.clone(), nstep_return=reward.clone(),
        next_window=next_window,
        bootstrap_discount=torch.where(~scripted & (torch.rand(batch, generator=generator) < bootstrap), gamma, 0.0),
    )


def supervised_batch(batch: int, history: int, generator: torch.Generator) -> Batch:
    """Scripted demonstrations only (what BC trains on); all windows succeed."""
    window = toy_window(batch, history, generator)
    ones = torch.ones(batch)
    return Batch(
        window=window, reward=ones, mc_return=ones.clone(), nstep_return=ones.clone(),
        next_window=toy_window(batch, history, generator), bootstrap_discount=torch.zeros(batch),
    )


def roundtrip(state: dict) -> dict:
    """A state dict as a checkpoint file would give it back (torch.save, weights_only load)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def check_protocol(make_algo, make_batch, history: int) -> None:
    """The Algorithm contract: act's dtype/shape/range, determinism, and bit-exact resume.

    ``make_algo()`` builds a fresh instance; ``make_batch(generator)`` a torch batch.
    """
    import numpy as np

    torch.manual_seed(0)
    first = make_algo()
    torch.manual_seed(0)
    second = make_algo()
    window = toy_window(7, history, torch.Generator().manual_seed(1))
    window.states *= 50.0  # far outside the data: the action must still be clipped
    action = first.act(window)
    assert isinstance(action, np.ndarray) and action.dtype == np.float32 and action.shape == (7, 4)
    assert np.all(np.abs(action) <= 1.0)
    np.testing.assert_array_equal(action, second.act(window))

    batches = [make_batch(torch.Generator().manual_seed(10 + i)) for i in range(4)]
    for b in batches[:2]:
        metrics = first.update(b)
        # floats, or 0-dim tensors the training loop reads once per log interval
        assert "loss" in metrics and all(isinstance(v, float) or v.dim() == 0 for v in metrics.values())
    saved = roundtrip(first.state_dict())
    torch.manual_seed(123)  # dropout draws from torch's generator: the training loop restores it
    expected = [first.update(b) for b in batches[2:]]
    torch.manual_seed(999)
    resumed = make_algo()
    resumed.load_state_dict(saved)
    torch.manual_seed(123)
    assert [resumed.update(b) for b in batches[2:]] == expected
    np.testing.assert_array_equal(resumed.act(window), first.act(window))
