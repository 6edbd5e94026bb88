"""The MLP networks of the IQL and CQL baselines: an ensemble of MLPs on (state window, instruction[, action]),
and ``ObsNetConfig``, the config fields the two share (the MLPs' shape, the critic's reward
transform, the state clip).

``ObsNet`` computes ``members`` MLPs together (the twin critics are one network with two
members), each reading the normalised last ``history`` states and the instruction through
its own order-aware word encoder; ``nets.distinct_instructions`` (shared with the
transformers) lets a batch encode each distinct instruction once.

The normalised state features are clipped to +-``state_clip`` (``STATE_CLIP`` by default, the
clip of Stable-Baselines3's ``VecNormalize``): a feature nearly constant in the data (an object
that rarely moves; its std floored at ``STD_FLOOR``) otherwise reaches |z| of 50-70 in the few
transitions where it changes, and on drawer_open those outliers drove IQL's and CQL's
bootstrapped critics to diverge (IQL's Q loss grew from 0.01 to 1e9 within 20000 steps in every
setting of its search; clipped at 10 it stays below 0.01 with unshifted rewards, while with the
AntMaze shift of -1 it still diverges: Q loss 280-9000 at 20000 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import AlgoConfig, EnvSpecInfo, Window
from qtbench.algorithms.ranges import added, ranged
from qtbench.algorithms.torch_utility import StateNormalised, check_reward_transform
from qtbench.nets import distinct_instructions

STATE_CLIP = 10.0  # default bound on |normalised state feature| (0: no clip)


@dataclass
class ObsNetConfig(AlgoConfig):
    """Fields of every algorithm whose networks are ``ObsNet`` ensembles (IQL, CQL)."""

    hidden_dim: int = ranged(256, at_least=1)  # MLP width
    n_layers: int = ranged(2, at_least=1)  # hidden layers per MLP
    word_dim: int = ranged(32, at_least=1)  # instruction word embedding size
    # The critic learns from reward_scale * r + reward_shift (sparse-reward recipes: IQL's
    # AntMaze shift -1, CQL's 4 * (r - 0.5)); a shift needs n_step 1.
    reward_scale: float = ranged(1.0, above=0)
    reward_shift: float = ranged(0.0)
    # |normalised state feature| bound (STATE_CLIP; 0: none, as runs made before it had)
    state_clip: float = added(STATE_CLIP, before=0.0, at_least=0)

    def validate(self) -> None:
        super().validate()
        check_reward_transform(self)

    def net_kwargs(self, spec: EnvSpecInfo) -> dict[str, Any]:
        """The ``ObsNet`` arguments this config fixes (all but members, out_dim, with_action)."""
        return dict(spec=spec, history=self.history, hidden_dim=self.hidden_dim, n_layers=self.n_layers,
                    word_dim=self.word_dim, relative=self.relative_positions, state_clip=self.state_clip)


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied as one batched matmul: (E, N, in) -> (E, N, out)."""

    def __init__(self, members: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class InstructionEncoder(nn.Module):
    """Token ids (B, L) -> one vector per member (E, B, d).

    Each word is embedded together with its position, passed through a per-token layer and
    mean-pooled over the non-padding words. Because the non-linearity acts on word+position,
    "move the orange near the red can" and "move the red can near the orange" differ.
    """

    def __init__(self, members: int, vocab_size: int, max_tokens: int, dim: int):
        super().__init__()
        self.word = nn.Parameter(torch.randn(members, vocab_size, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(members, max_tokens, dim) * 0.1)
        self.mix = EnsembleLinear(members, dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        members, vocab, dim = self.word.shape
        # One embedding lookup for all members: member e's table is rows [e * vocab, (e+1) * vocab).
        offsets = torch.arange(members, device=tokens.device).view(-1, 1, 1) * vocab
        x = F.embedding(tokens + offsets, self.word.view(-1, dim)) + self.pos[:, None, : tokens.shape[1]]
        x = F.relu(self.mix(x.reshape(members, -1, dim))).reshape(members, *tokens.shape, dim)
        keep = (tokens != 0).to(x.dtype)
        return (x * keep[..., None]).sum(2) / keep.sum(1).clamp_min(1.0)[:, None]


Instructions = tuple[torch.Tensor, torch.Tensor]


class ObsNet(StateNormalised):
    """``members`` MLPs on (normalised state window, instruction[, action]), computed together.

    ``encode`` turns a window into per-member features once; ``head`` maps features (and an
    action) to outputs, so callers that score many actions per state (CQL) encode only once.
    """

    def __init__(
        self, spec: EnvSpecInfo, history: int, members: int, out_dim: int,
        hidden_dim: int, n_layers: int, word_dim: int, with_action: bool, relative: bool = False,
        state_clip: float = STATE_CLIP,
    ):
        super().__init__(spec, relative)
        self.history, self.members, self.state_clip = history, members, state_clip
        self.instruction = InstructionEncoder(members, spec.vocab_size, spec.max_tokens, word_dim)
        d_in = history * self.input_dim + word_dim + (spec.action_dim if with_action else 0)
        dims = [d_in] + [hidden_dim] * n_layers
        self.hidden = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(members, hidden_dim, out_dim)

    def encode(self, window: Window, instructions: Instructions | None = None) -> torch.Tensor:
        """(E, B, F) features: the last ``history`` states (padding zeroed) and the instruction.

        ``instructions`` is ``distinct_instructions(window.instruction)`` when the caller has it.
        """
        states = self.normalise(window.states[:, -self.history:])
        if self.state_clip:
            states = states.clamp(-self.state_clip, self.state_clip)
        states = states * window.mask[:, -self.history:, None]
        states = states.flatten(1).expand(self.members, -1, -1)
        if instructions is None:
            instructions = distinct_instructions(window.instruction)
        distinct, index = instructions
        return torch.cat([states, self.instruction(distinct)[:, index]], dim=-1)

    def head(self, features: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """features (E, N, F), action (N, A) or (E, N, A) -> outputs (E, N, out)."""
        x = features
        if action is not None:
            x = torch.cat([x, action.expand(self.members, -1, -1)], dim=-1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)

    def forward(
        self, window: Window, action: torch.Tensor | None = None, instructions: Instructions | None = None
    ) -> torch.Tensor:
        return self.head(self.encode(window, instructions), action)
