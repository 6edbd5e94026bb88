"""Q-Transformer (Chebotar et al., 2023, arXiv 2309.10150), in one file, top to bottom.

Read in order: the config, the action discretisation, the network (the shared
action-token transformer of ``qtbench.nets`` with per-dimension Q heads), the loss as
small pure functions (the unit tests call these with hand-computed numbers), and the
``QTransformer`` class that ties them to the ``Algorithm`` protocol.

The idea: discretise every action dimension into ``n_bins`` bins and treat the
dimensions as a sequence of tokens after the observation tokens. The transformer's
output at action token ``i`` is Q(s, a_1..a_{i-1}, .) over the bins of dimension ``i``,
so one causal forward pass with the dataset action fed in (teacher forcing) scores every
dimension at once. Q values are sigmoids in [0, 1] because rewards are sparse and binary.

Bellman backup per dimension (everything from the target network):
    i < A:  Q(s, a_1..a_i)   <- max_b Q_t(s, a_1..a_i, b)                (same step)
    i = A:  Q(s, a_1..a_A)   <- R_n + discount * max_b Q_t(s', b)         (next step)
where R_n is the (n-step) return and discount is gamma^m, or 0 after a termination.
With the Monte-Carlo bound every target is max(target, return-to-go of that step), and
the conservative regulariser pulls the Q value of every non-dataset bin toward 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import AlgoConfig, Batch, EnvSpecInfo, Window
from qtbench.errors import QtbenchError
from qtbench.nets import ActionTokenTransformer, autocast, float32_head


# ---- config ------------------------------------------------------------------------------
@dataclass
class QTransformerConfig(AlgoConfig):
    """Reference settings: sized so a few thousand updates fit ~10 minutes on 2 CPU cores."""

    n_bins: int = 256  # bins per action dimension (paper: 256)
    # The state is Markov: 1 step instead of 4 makes an update 1.17x faster (15.3 vs 13.1 per
    # CPU-second, `qtbench bench train --task all`); success on drawer_open with history 1 and
    # bf16 together vs the code before issue 11 (history 4, float32): README "Training speed".
    history: int = 1
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.0  # BC's 0.1 measured no better for Q-learning on drawer_open
    alpha: float = 1.0  # weight of the conservative regulariser (paper: 1.0)
    conservative: bool = True  # --no-conservative turns the regulariser off
    mc_return: bool = True  # --no-mc-return drops the Monte-Carlo lower bound
    tau: float = 0.005  # Polyak rate of the target network
    grad_clip: float = 1.0  # max global gradient norm
    weight_decay: float = 0.01  # AdamW
    # bfloat16 autocast of the forward passes (--amp none turns it off); heads stay float32.
    # 1.66x faster updates on a CPU with AVX512-BF16 (15.3 vs 9.2); success: as for history.
    amp: str = "bf16"


# Config fields that change parameter shapes: a checkpoint must agree on these.
_ARCHITECTURE_FIELDS = ("n_bins", "d_model", "n_layers", "n_heads", "history")


# ---- action discretisation ---------------------------------------------------------------
def to_bins(actions: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Continuous actions in [-1, 1] -> int64 bin indices in [0, n_bins); equal-width bins."""
    scaled = (actions.clamp(-1.0, 1.0) + 1.0) * (n_bins / 2.0)
    return scaled.floor().long().clamp_(0, n_bins - 1)


def bin_centres(bins: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin indices -> the continuous action at each bin's centre (float32, inside (-1, 1))."""
    return (bins.float() + 0.5) * (2.0 / n_bins) - 1.0


# ---- network -----------------------------------------------------------------------------
class QNetwork(nn.Module):
    """The shared action-token transformer (``qtbench.nets``) with one linear Q head per
    dimension: output i = Q logits over the bins of dimension i."""

    def __init__(self, spec: EnvSpecInfo, config: QTransformerConfig):
        super().__init__()
        d, a, n = config.d_model, spec.action_dim, config.n_bins
        self.body = ActionTokenTransformer(spec, config.history, n, d, config.n_layers, config.n_heads, config.dropout)
        self.head_weight = nn.Parameter(torch.randn(a, d, n) * d**-0.5)
        self.head_bias = nn.Parameter(torch.zeros(a, n))

    def heads(self, h: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Outputs (B, k, d) at the tokens of dimensions first..first+k-1 -> Q logits (B, k, n), float32."""
        k = h.shape[1]

        def head(x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bkd,kdn->bkn", x, self.head_weight[first : first + k]) + self.head_bias[first : first + k]

        return float32_head(head, h)

    def forward(self, window: Window, bins: torch.Tensor | None, n_tokens: int | None = None) -> torch.Tensor:
        """Q logits (B, n_tokens, n_bins) for dimensions 0..n_tokens-1, ``bins`` teacher-forced
        (see ``ActionTokenTransformer.forward``)."""
        return self.heads(self.body(window, bins, n_tokens))

    def greedy(self, window: Window) -> torch.Tensor:
        """Bins (B, A): the argmax of each dimension's Q given the earlier greedy choices."""
        return self.body.greedy(window, lambda h, i: self.heads(h[:, None], i)[:, 0])


# ---- loss: small pure functions ----------------------------------------------------------
def td_targets(
    q_target_same_step: torch.Tensor,
    q_target_next_first: torch.Tensor,
    nstep_return: torch.Tensor,
    bootstrap_discount: torch.Tensor,
    mc_return: torch.Tensor | None,
) -> torch.Tensor:
    """Per-dimension Bellman targets (B, A) from target-network Q values.

    q_target_same_step: (B, A, n) teacher-forced Q values of the current step; entry i
        scores dimension i given the dataset bins of dimensions < i. Entry 0 is unused.
    q_target_next_first: (B, n) Q values of dimension 0 at the bootstrap step s_{t+m}.
    nstep_return, bootstrap_discount, mc_return: (B,) from the batch; bootstrap_discount
        is gamma^m, already 0 where the episode terminated (not where it was truncated).
    """
    same_step = q_target_same_step[:, 1:].amax(dim=-1)  # dims 0..A-2: no reward, no discount
    last = nstep_return + bootstrap_discount * q_target_next_first.amax(dim=-1)
    targets = torch.cat([same_step, last[:, None]], dim=1)
    if mc_return is not None:
        targets = torch.maximum(targets, mc_return[:, None])  # each transition's own return
    return targets


def dataset_values(q_values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Q of the dataset bin in every dimension: (B, A, n), (B, A) -> (B, A)."""
    return q_values.gather(-1, bins[..., None]).squeeze(-1)


def td_loss(q_data: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over batch and dimensions of the squared Bellman error."""
    return F.mse_loss(q_data, targets)


def conservative_penalty(q_values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Mean of Q^2 over every non-dataset bin of every dimension (values, not logits).

    Regressing the values toward 0 (the minimum return) and averaging keeps the penalty's
    scale independent of the number of bins.
    """
    other = torch.ones_like(q_values).scatter_(-1, bins[..., None], 0.0)
    return (q_values.square() * other).sum() / other.sum()


def total_loss(td: torch.Tensor, penalty: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """0.5 * TD + 0.5 * alpha * regulariser (the regulariser term is absent when off)."""
    return 0.5 * td if penalty is None else 0.5 * td + 0.5 * alpha * penalty


# ---- the algorithm -----------------------------------------------------------------------
class QTransformer:
    """Q-Transformer behind the ``Algorithm`` protocol (online + Polyak target network)."""

    config_class: ClassVar[type[AlgoConfig]] = QTransformerConfig

    def __init__(self, spec: EnvSpecInfo, config: QTransformerConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.online = QNetwork(spec, config).to(self.device)
        self.target = QNetwork(spec, config).to(self.device)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False).eval()
        # fused: one kernel for the whole step instead of ~10 small ops per parameter tensor
        self.optimizer = torch.optim.AdamW(
            self.online.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
        autocast(self.device, config.amp)  # an unknown amp mode fails here, not at the first update
        self.updates = 0

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        bins = to_bins(batch.window.actions[:, -1], cfg.n_bins)  # dataset action a_t
        self.online.train()
        with torch.no_grad(), autocast(self.device, cfg.amp):
            q_same = torch.sigmoid(self.target(batch.window, bins))
            q_next = torch.sigmoid(self.target(batch.next_window, None, n_tokens=1))[:, 0]
        targets = td_targets(
            q_same, q_next, batch.nstep_return.float(), batch.bootstrap_discount.float(),
            batch.mc_return.float() if cfg.mc_return else None,
        )
        with autocast(self.device, cfg.amp):
            q = torch.sigmoid(self.online(batch.window, bins))
        q_data = dataset_values(q, bins)
        td = td_loss(q_data, targets)
        penalty = conservative_penalty(q, bins) if cfg.conservative else None
        loss = total_loss(td, penalty, cfg.alpha)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():  # Polyak averaging: target <- target + tau * (online - target)
            torch._foreach_lerp_(list(self.target.parameters()), list(self.online.parameters()), cfg.tau)
        self.updates += 1
        return {  # tensors: the training loop reads them once per log interval, not every step
            "loss": loss.detach(),
            "td_loss": td.detach(),
            "conservative": penalty.detach() if penalty is not None else torch.zeros((), device=self.device),
            "q_data": q_data.detach().mean(),
            "target": targets.mean(),
            "grad_norm": grad_norm,
        }

    @torch.no_grad()
    def act(self, window: Window) -> np.ndarray:
        """Greedy bins from the online network and the same heads as in training, as actions."""
        self.online.eval()
        with autocast(self.device, self.config.amp):
            bins = self.online.greedy(window)
        self.online.train()
        return bin_centres(bins, self.config.n_bins).cpu().numpy().astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {})
        mine = dataclasses.asdict(self.config)
        differ = [f"{k}={saved[k]!r} (now {mine[k]!r})" for k in _ARCHITECTURE_FIELDS if k in saved and saved[k] != mine[k]]
        if differ:
            raise QtbenchError(
                "checkpoint is from a Q-Transformer with a different architecture: " + ", ".join(differ),
                "resume with the same settings, or start a fresh run without --resume",
            )
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state.get("updates", 0))
