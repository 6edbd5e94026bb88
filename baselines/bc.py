"""RT-1 style behaviour cloning: the Q-Transformer backbone, discretised actions, cross-entropy.

As in the paper's comparison (its RT-1 baseline), the policy is trained on the successful
demonstrations only (``dataset="demos"``); ``dataset="mixed"`` trains on everything and
``filtered=True`` keeps only successful episodes of whichever split is chosen (the
training loop maps it to ``TransitionData.load(..., successful_only=True)``).

Each action dimension is discretised into 256 uniform bins with Q-Transformer's
``to_bins``/``bin_centres`` and decoded with its ``greedy_decode``
(``qtbench.algorithms.torch_utility``), so both act on the same action grid. The action is
decoded one dimension at a time, each conditioned on the bins already chosen (teacher
forcing with the dataset bins in training), exactly like Q-Transformer's action tokens, in
the same order (the gripper first by default: ``qtbench.nets.ActionTokenConfig``).
RT-1 itself emits the dimensions in parallel; we chose the autoregressive form so that BC
and Q-Transformer share the architecture token for token and the comparison measures the
learning rule (imitation vs. offline RL) rather than the action head, and because it lets
the policy model correlations between dimensions of multimodal human-like demonstrations
(the per-dimension argmax of a parallel head can mix modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import AlgoConfig, Batch, EnvSpecInfo, Window
from qtbench.algorithms.ranges import ranged
from qtbench.algorithms.torch_utility import ActionGrid, greedy_decode
from qtbench.nets import (
    ActionTokenConfig, CausalTransformer, ContextTokens, action_tokens, amp_field, autocast, instruction_prefix, resolve_amp,
)


@dataclass
class BCConfig(ActionTokenConfig):
    dataset: str = "demos"
    bins: int = ranged(256, at_least=2)  # bins per action dimension (Q-Transformer's n_bins; saved configs name it so)
    d_model: int = ranged(128, at_least=1)  # transformer width
    n_layers: int = ranged(2, at_least=1)  # backbone sizes: Q-Transformer's defaults
    n_heads: int = ranged(4, at_least=1, divides="d_model")  # attention heads
    dropout: float = ranged(0.1, at_least=0, below=1)  # RT-1's; demonstrations are few, so BC needs it more than Q-learning
    grad_clip: float = ranged(1.0, above=0)  # max global gradient norm
    weight_decay: float = ranged(0.01, at_least=0)  # AdamW, as Q-Transformer
    amp: str = amp_field()  # precision of the forward passes: "none" (float32), "bf16", "auto" (nets.amp_field)


# `qtbench tune --algo bc` tries these settings on drawer_open (at most 8). The first is
# RT-1's recipe as the Q-Transformer paper ran it (demonstrations only, dropout 0.1); then
# no dropout, a lower learning rate and the whole mixture (demos and failures) to clone.
TUNING_SETTINGS: list[dict[str, object]] = [
    {"dataset": dataset, "dropout": dropout, "learning_rate": lr}
    for dataset in ("demos", "mixed") for dropout in (0.1, 0.0) for lr in (3e-4, 1e-4)
]


class AutoregressivePolicy(nn.Module):
    """Context tokens, then one token per action dimension; token i predicts dimension i's bin.

    Token 0 is a learned start token; token i > 0 embeds the bin chosen for dimension i-1.
    The causal mask lets token i see the whole observation and the bins of dimensions < i.
    """

    def __init__(self, spec: EnvSpecInfo, config: BCConfig):
        super().__init__()
        d, self.action_dim, self.n_bins = config.d_model, spec.action_dim, config.bins
        self.context = ContextTokens(
            spec, config.history, d, config.relative_positions, config.stack_history,
            encode=config.n_heads if config.instruction_token else None,
        )
        self.body = CausalTransformer(d, config.n_layers, config.n_heads, config.dropout)
        self.start = nn.Parameter(torch.zeros(1, 1, d))
        self.dim_pos = nn.Parameter(torch.randn(spec.action_dim, d) * 0.02)
        # One table per conditioning dimension: bin k of dimension i is row i * bins + k.
        self.bin_embed = nn.Embedding(max(spec.action_dim - 1, 1) * config.bins, d)
        self.head = nn.Linear(d, config.bins)

    def action_tokens(self, bins: torch.Tensor | None, first: int, count: int, batch: int) -> torch.Tensor:
        """Input tokens (B, count, d) of dimensions first..first+count-1 (see ``nets.action_tokens``)."""
        return action_tokens(self.start, self.bin_embed, self.dim_pos, self.n_bins, bins, first, count, batch)

    def logits(self, window: Window, prev_bins: torch.Tensor) -> torch.Tensor:
        """window + bins of dimensions 0..k-2 (B, k-1) -> logits (B, k, bins) for dimensions 0..k-1.

        The instruction words run once per distinct instruction (``nets.instruction_prefix``)."""
        words = instruction_prefix(self.body, self.context.instruction, window.instruction)
        states, ignore = self.context.states(window)
        batch, k = states.shape[0], prev_bins.shape[1] + 1
        seq = torch.cat([states, self.action_tokens(prev_bins, 0, k, batch)], dim=1)
        ignore = torch.cat([ignore, ignore.new_zeros(batch, k)], dim=1)
        return self.head(self.body(seq, ignore, last=k, past=words))

    def greedy(self, window: Window) -> torch.Tensor:
        """Argmax bins (B, A), chosen one dimension at a time; the context's keys/values are
        computed once and each dimension adds one token to them."""
        cache = instruction_prefix(self.body, self.context.instruction, window.instruction)
        states, ignore = self.context.states(window)
        batch = states.shape[0]
        self.body.extend(cache, states, ignore, last=1)
        no_padding = ignore.new_zeros(batch, 1)

        def logits_at(bins: torch.Tensor, i: int) -> torch.Tensor:
            return self.head(self.body.extend(cache, self.action_tokens(bins, i, 1, batch), no_padding))[:, 0]

        return greedy_decode(logits_at, batch, self.action_dim, states.device)


class BC:
    """RT-1 style behaviour cloning with autoregressive per-dimension action tokens."""

    config_class: ClassVar[type[AlgoConfig]] = BCConfig
    # Training budget (recorded in config.json as "steps" and "default_steps"): Q-Transformer's,
    # since the budgets are sized to be close in wall-clock time (see qtbench/q_transformer.py).
    default_steps: ClassVar[int] = 3000
    display_rank: ClassVar[int] = 3
    headline: ClassVar[bool] = True

    def __init__(self, spec: EnvSpecInfo, config: BCConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.amp = resolve_amp(config.amp, self.device)  # the precision it runs in here
        self.policy = AutoregressivePolicy(spec, config).to(self.device)
        self.grid = ActionGrid(config.bins, spec.action_dim, config.gripper_first, self.device)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def update(self, batch: Batch) -> dict[str, float]:
        self.policy.train()
        target = self.grid.bins(batch.window.actions[:, -1])  # (B, A), in decoding order
        with autocast(self.device, self.amp):
            logits = self.policy.logits(batch.window, target[:, :-1]).float()
        loss = F.cross_entropy(logits.reshape(-1, self.config.bins), target.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip)
        self.optimizer.step()
        accuracy = (logits.detach().argmax(-1) == target).float().mean()
        return {"loss": loss.detach(), "bin_accuracy": accuracy, "grad_norm": grad_norm}  # read once per log interval

    @torch.no_grad()
    def act(self, window: Window) -> np.ndarray:
        self.policy.eval()
        with autocast(self.device, self.amp):
            bins = self.policy.greedy(window)
        actions = self.grid.actions(bins)
        return actions.clamp(-1.0, 1.0).float().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
