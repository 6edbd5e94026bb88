"""RT-1 style behaviour cloning: the Q-Transformer backbone, discretised actions, cross-entropy.

As in the paper's comparison (its RT-1 baseline), the policy is trained on the successful
demonstrations only (``dataset="demos"``); ``dataset="mixed"`` trains on everything and
``filtered=True`` keeps only successful episodes of whichever split is chosen (the
training loop maps it to ``TransitionData.load(..., successful_only=True)``).

Each action dimension is discretised into 256 uniform bins, with Q-Transformer's own
``to_bins``/``bin_centres`` so both act on the same action grid. The action is decoded one
dimension at a time, each conditioned on the bins already chosen (teacher forcing with the
dataset bins in training), exactly like Q-Transformer's action tokens. RT-1 itself emits
the dimensions in parallel; we chose the autoregressive form so that BC and Q-Transformer
share the architecture token for token and the comparison measures the learning rule
(imitation vs. offline RL) rather than the action head, and because it lets the policy
model correlations between dimensions of multimodal human-like demonstrations (the
per-dimension argmax of a parallel head can mix modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import AlgoConfig, Batch, EnvSpecInfo, Window
from qtbench.nets import ActionTokenTransformer, autocast, float32_head
from qtbench.q_transformer import bin_centres, to_bins


@dataclass
class BCConfig(AlgoConfig):
    dataset: str = "demos"
    bins: int = 256
    history: int = 1  # as Q-Transformer's (the state is Markov): 1.18x faster; README "Training speed"
    d_model: int = 128
    n_layers: int = 2  # backbone sizes: Q-Transformer's defaults
    n_heads: int = 4
    dropout: float = 0.1  # RT-1's; demonstrations are few, so BC needs it more than Q-learning
    grad_clip: float = 1.0
    weight_decay: float = 0.01  # AdamW, as Q-Transformer
    # bfloat16 autocast of the forward passes (--amp none: off), 1.6x faster; the head stays float32
    amp: str = "bf16"


class AutoregressivePolicy(nn.Module):
    """The shared action-token transformer (``qtbench.nets``) with one linear head over the
    bins, shared by all dimensions: the output at action token i predicts dimension i's bin."""

    def __init__(self, spec: EnvSpecInfo, config: BCConfig):
        super().__init__()
        self.body = ActionTokenTransformer(
            spec, config.history, config.bins, config.d_model, config.n_layers, config.n_heads, config.dropout
        )
        self.head = nn.Linear(config.d_model, config.bins)

    def logits(self, window: Window, prev_bins: torch.Tensor) -> torch.Tensor:
        """window + bins of dimensions 0..k-2 (B, k-1) -> logits (B, k, bins) for dimensions 0..k-1, float32."""
        return float32_head(self.head, self.body(window, prev_bins, prev_bins.shape[1] + 1))

    def greedy(self, window: Window) -> torch.Tensor:
        """Argmax bins (B, A), chosen one dimension at a time."""
        return self.body.greedy(window, lambda h, i: float32_head(self.head, h))


class BC:
    """RT-1 style behaviour cloning with autoregressive per-dimension action tokens."""

    config_class: ClassVar[type[AlgoConfig]] = BCConfig

    def __init__(self, spec: EnvSpecInfo, config: BCConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.policy = AutoregressivePolicy(spec, config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        autocast(self.device, config.amp)  # an unknown amp mode fails here, not at the first update

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.policy.train()
        target = to_bins(batch.window.actions[:, -1], self.config.bins)  # (B, A)
        with autocast(self.device, self.config.amp):
            logits = self.policy.logits(batch.window, target[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, self.config.bins), target.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip)
        self.optimizer.step()
        accuracy = (logits.detach().argmax(-1) == target).float().mean()
        # tensors: the training loop reads them once per log interval, not every step
        return {"loss": loss.detach(), "bin_accuracy": accuracy, "grad_norm": grad_norm}

    @torch.no_grad()
    def act(self, window: Window) -> np.ndarray:
        self.policy.eval()
        with autocast(self.device, self.config.amp):
            bins = self.policy.greedy(window)
        return bin_centres(bins, self.config.bins).clamp(-1.0, 1.0).float().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
