"""Q-Transformer (Chebotar et al., 2023, arXiv 2309.10150), in one file, top to bottom.

Read in order: the config, the network, the loss as small pure functions (the unit
tests call these with hand-computed numbers), and the ``QTransformer`` class that ties
them to the ``Algorithm`` protocol. The action grid (``to_bins``, ``bin_centres``), greedy
decoding and the Polyak update are shared with the baselines
(``qtbench.algorithms.torch_utility``).

The idea: discretise every action dimension into ``n_bins`` bins and treat the
dimensions as a sequence of tokens after the observation tokens (in decoding order: the
gripper first by default, ``qtbench.nets.ActionTokenConfig``; "dimension i" below counts in it). The transformer's
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
from qtbench.algorithms.ranges import ranged
from qtbench.algorithms.torch_utility import ActionGrid, greedy_decode, polyak_update
from qtbench.errors import QtbenchError
from qtbench.nets import (
    ActionTokenConfig, CausalTransformer, ContextTokens, KVCache, action_tokens, amp_field, autocast,
    instruction_prefix, resolve_amp,
)


# ---- config ------------------------------------------------------------------------------
@dataclass
class QTransformerConfig(ActionTokenConfig):
    """Reference settings: sized so a few thousand updates fit ~10 minutes on 2 CPU cores."""

    n_bins: int = ranged(256, at_least=2)  # bins per action dimension (paper: 256)
    d_model: int = ranged(128, at_least=1)  # transformer width
    n_layers: int = ranged(2, at_least=1)  # transformer blocks
    n_heads: int = ranged(4, at_least=1, divides="d_model")  # attention heads
    dropout: float = ranged(0.0, at_least=0, below=1)  # BC's 0.1 measured no better for Q-learning on drawer_open
    alpha: float = ranged(1.0, at_least=0)  # weight of the conservative regulariser (paper: 1.0)
    conservative: bool = True  # --no-conservative turns the regulariser off
    mc_return: bool = True  # --no-mc-return drops the Monte-Carlo lower bound
    tau: float = ranged(0.005, above=0, at_most=1)  # Polyak rate of the target network
    grad_clip: float = ranged(1.0, above=0)  # max global gradient norm
    weight_decay: float = ranged(0.01, at_least=0)  # AdamW
    amp: str = amp_field()  # precision of the forward passes: "none" (float32), "bf16", "auto" (nets.amp_field)


# `qtbench tune --algo q_transformer` tries these settings on drawer_open (at most 8), the
# same treatment as every baseline. The first is the paper's recipe: conservative weight 1,
# Monte-Carlo lower bound, 1-step returns; then a weaker regulariser, n-step returns (the
# paper's faster variant) and a lower learning rate.
TUNING_SETTINGS: list[dict[str, object]] = [
    {"alpha": alpha, "n_step": n_step, "learning_rate": lr}
    for alpha in (1.0, 0.1) for n_step in (1, 3) for lr in (3e-4, 1e-4)
]


# Config fields that change parameter shapes: a checkpoint must agree on these.
_ARCHITECTURE_FIELDS = (
    "n_bins", "d_model", "n_layers", "n_heads", "history", "relative_positions", "stack_history", "gripper_first",
    "instruction_token",
)


# ---- network -----------------------------------------------------------------------------
class QNetwork(nn.Module):
    """Context tokens, then A action tokens; output i = Q logits over the bins of dimension i.

    Action token 0 is a learned start embedding; action token i > 0 embeds the bin chosen
    for dimension i-1 (each dimension has its own bin embeddings), and every action token
    gets its dimension's embedding. Each dimension has its own linear Q head.
    """

    def __init__(self, spec: EnvSpecInfo, config: QTransformerConfig):
        super().__init__()
        d, a, n = config.d_model, spec.action_dim, config.n_bins
        self.action_dim, self.n_bins = a, n
        self.context = ContextTokens(
            spec, config.history, d, config.relative_positions, config.stack_history,
            encode=config.n_heads if config.instruction_token else None,
        )
        self.backbone = CausalTransformer(d, config.n_layers, config.n_heads, config.dropout)
        self.start = nn.Parameter(torch.randn(d) * 0.02)
        self.bin_embed = nn.Embedding(a * n, d)  # row i*n + b: bin b of dimension i
        nn.init.normal_(self.bin_embed.weight, std=0.02)
        self.dim_embed = nn.Parameter(torch.randn(a, d) * 0.02)
        self.head_weight = nn.Parameter(torch.randn(a, d, n) * d**-0.5)
        self.head_bias = nn.Parameter(torch.zeros(a, n))

    def action_tokens(self, bins: torch.Tensor | None, first: int, count: int, batch: int) -> torch.Tensor:
        """Input tokens (B, count, d) of dimensions first..first+count-1 (see ``nets.action_tokens``)."""
        return action_tokens(self.start, self.bin_embed, self.dim_embed, self.n_bins, bins, first, count, batch)

    def heads(self, h: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Outputs (B, k, d) at the tokens of dimensions first..first+k-1 -> Q logits (B, k, n).

        Always float32, also under bfloat16 autocast: Bellman targets differ by factors of
        gamma = 0.98, finer than bfloat16's 8-bit mantissa resolves near Q = 1."""
        k = h.shape[1]
        with torch.autocast(h.device.type, enabled=False):
            return torch.einsum("bkd,kdn->bkn", h.float(), self.head_weight[first : first + k]) + self.head_bias[first : first + k]

    def instruction(self, instruction: torch.Tensor) -> KVCache:
        """Every block's keys/values of each sample's instruction words (``nets.instruction_prefix``)."""
        return instruction_prefix(self.backbone, self.context.instruction, instruction)

    def forward(
        self, window: Window, bins: torch.Tensor | None, n_tokens: int | None = None, words: KVCache | None = None
    ) -> torch.Tensor:
        """Q logits (B, n_tokens, n_bins) for dimensions 0..n_tokens-1.

        ``bins`` (B, >= n_tokens-1) are the bins fed in for the earlier dimensions (the
        dataset action when training); it may be None when ``n_tokens`` is 1. Causal
        attention means output i never sees bins >= i. The instruction words run once per
        distinct instruction; ``words`` passes in ``self.instruction(window.instruction)``
        when it was already computed.
        """
        k = self.action_dim if n_tokens is None else n_tokens
        words = self.instruction(window.instruction) if words is None else words
        states, ignore = self.context.states(window)
        b = states.shape[0]
        seq = torch.cat([states, self.action_tokens(bins, 0, k, b)], dim=1)
        seq_ignore = torch.cat([ignore, ignore.new_zeros(b, k)], dim=1)
        return self.heads(self.backbone(seq, seq_ignore, last=k, past=words))

    def greedy(self, window: Window) -> torch.Tensor:
        """Bins (B, A): the argmax of each dimension's Q given the earlier greedy choices.

        The context's keys/values are computed once and each dimension adds one token to
        them (the same outputs as ``forward`` with the chosen bins fed in)."""
        cache = self.instruction(window.instruction)
        states, ignore = self.context.states(window)
        b = states.shape[0]
        self.backbone.extend(cache, states, ignore, last=1)
        no_padding = ignore.new_zeros(b, 1)

        def q_logits_at(bins: torch.Tensor, i: int) -> torch.Tensor:
            h = self.backbone.extend(cache, self.action_tokens(bins, i, 1, b), no_padding)
            return self.heads(h, first=i)[:, 0]

        return greedy_decode(q_logits_at, b, self.action_dim, states.device)


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
    # Training budget (recorded in config.json as "steps" and "default_steps"). Sized so
    # `qtbench run --algo q_transformer --task drawer_open` (dataset generation + training +
    # evaluation) stays within ~15 minutes on 2 CPU cores even when other processes share them.
    # Measured on an otherwise quiet 2-core machine: 462 s in all (datasets ~5 s, 3000 updates
    # at 6.6/s with 1 thread = 453 s, evaluation 1.3 s). The other algorithms' budgets are
    # close to this one in wall-clock time rather than in steps.
    default_steps: ClassVar[int] = 3000
    display_rank: ClassVar[int] = 0  # first in leaderboard tables
    headline: ClassVar[bool] = True

    def __init__(self, spec: EnvSpecInfo, config: QTransformerConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.amp = resolve_amp(config.amp, self.device)  # the precision it runs in here
        self.online = QNetwork(spec, config).to(self.device)
        self.target = QNetwork(spec, config).to(self.device)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False).eval()
        self.grid = ActionGrid(config.n_bins, spec.action_dim, config.gripper_first, self.device)
        # fused: one kernel for the whole step instead of ~10 small ops per parameter tensor
        self.optimizer = torch.optim.AdamW(
            self.online.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
        self.updates = 0

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        bins = self.grid.bins(batch.window.actions[:, -1])  # dataset action a_t, in decoding order
        self.online.train()
        with torch.no_grad(), autocast(self.device, self.amp):
            # s_t and s_{t+m} are from one episode: their instructions' keys/values are computed once
            b = bins.shape[0]
            words = self.target.instruction(torch.cat([batch.window.instruction, batch.next_window.instruction]))
            q_same = torch.sigmoid(self.target(batch.window, bins, words=words.rows(slice(None, b))))
            q_next = torch.sigmoid(self.target(batch.next_window, None, n_tokens=1, words=words.rows(slice(b, None))))[:, 0]
            targets = td_targets(
                q_same, q_next, batch.nstep_return.float(), batch.bootstrap_discount.float(),
                batch.mc_return.float() if cfg.mc_return else None,
            )
        with autocast(self.device, self.amp):
            q = torch.sigmoid(self.online(batch.window, bins))
        q_data = dataset_values(q, bins)
        td = td_loss(q_data, targets)
        penalty = conservative_penalty(q, bins) if cfg.conservative else None
        loss = total_loss(td, penalty, cfg.alpha)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
        self.optimizer.step()
        polyak_update(self.target, self.online, cfg.tau)
        self.updates += 1
        return {  # tensors: the training loop reads them from the device once per log interval
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
        with autocast(self.device, self.amp):
            bins = self.online.greedy(window)
        self.online.train()
        return self.grid.actions(bins).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def values(self, window: Window, actions: torch.Tensor) -> torch.Tensor:
        """Q of given actions (B, A) -> (B,): the online network's Q of the last dimension with
        the actions' bins fed in, Q(s, a_1..a_A), the one value that scores the whole action
        (the earlier dimensions' Q values are maxima over the dimensions still to come)."""
        return self.dimension_values(window, actions)[:, -1]

    @property
    def decoding_order(self) -> list[int]:
        """The env's action dimensions in the order they are decoded (``dimension_values``' columns)."""
        return self.grid.order.tolist()

    @torch.no_grad()
    def dimension_values(self, window: Window, actions: torch.Tensor) -> torch.Tensor:
        """Q of every dimension of given actions (B, A) -> (B, A), in decoding order: entry i is
        Q(s, a_1..a_i), which the per-dimension backup makes the maximum over the dimensions
        after i, so along one action the entries should not fall (``qtbench probe`` reads them)."""
        self.online.eval()
        bins = self.grid.bins(actions)
        with autocast(self.device, self.amp):
            q = torch.sigmoid(self.online(window, bins))
        self.online.train()
        return dataset_values(q, bins)

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
