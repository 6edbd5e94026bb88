"""The shared transformer backbone: instruction words and a window of states as tokens.

Q-Transformer and the RT-1 style BC baseline use the same backbone, so a comparison
between them measures the learning rule, not the architecture. Instruction words are
kept as separate tokens (not mean-pooled) because word order carries meaning:
"move the orange near the red can" is not "move the red can near the orange".
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import EnvSpecInfo, Window


class ContextTokens(nn.Module):
    """Window -> token sequence [w_1..w_L, s_1..s_H] and its key padding mask (True = ignore)."""

    def __init__(self, spec: EnvSpecInfo, history: int, d_model: int):
        super().__init__()
        self.word = nn.Embedding(spec.vocab_size, d_model, padding_idx=0)
        self.word_pos = nn.Parameter(torch.zeros(spec.max_tokens, d_model))
        self.state = nn.Sequential(nn.Linear(spec.state_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.state_pos = nn.Parameter(torch.zeros(history, d_model))
        mean = torch.tensor(spec.state_mean or [0.0] * spec.state_dim, dtype=torch.float32)
        std = torch.tensor(spec.state_std or [1.0] * spec.state_dim, dtype=torch.float32)
        self.register_buffer("state_mean", mean)
        self.register_buffer("state_std", std.clamp_min(1e-3))
        nn.init.normal_(self.word_pos, std=0.02)
        nn.init.normal_(self.state_pos, std=0.02)

    def forward(self, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        # Instructions may come trimmed of trailing padding (see trim_padding).
        words = self.word(window.instruction) + self.word_pos[: window.instruction.shape[1]]
        states = (window.states - self.state_mean) / self.state_std
        states = self.state(states) + self.state_pos[-states.shape[1]:]
        tokens = torch.cat([words, states], dim=1)
        ignore = torch.cat([window.instruction == 0, ~window.mask], dim=1)
        return tokens, ignore


def trim_padding(window: Window) -> Window:
    """The window with the instruction's all-padding trailing columns dropped.

    The dropped tokens are ignored by attention anyway, so outputs at the kept positions
    are unchanged; short instructions ("open the top drawer") then cost 4 tokens, not 14.
    """
    used = (window.instruction != 0).any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return dataclasses.replace(window, instruction=window.instruction[:, :keep])


class _Block(nn.Module):
    """Pre-norm causal self-attention and GELU MLP, each with a residual connection."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # (B, heads, n, d/heads)

    def forward(self, x: torch.Tensor, attend: torch.Tensor, last: int | None) -> torch.Tensor:
        """x (B, n, d); attend (B, 1, n, n) True = may attend; only the last ``last`` rows out."""
        b, n, d = x.shape
        h = self.norm1(x)
        w, bias = self.qkv.weight, self.qkv.bias
        if last is not None:  # keys/values from every token, queries only from the kept ones
            x, attend = x[:, -last:], attend[:, :, -last:]
        q = F.linear(h if last is None else h[:, -last:], w[:d], bias[:d])
        k, v = F.linear(h, w[d:], bias[d:]).chunk(2, dim=-1)
        a = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=attend,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).flatten(2)))
        return x + self.drop(self.mlp(self.norm2(x)))


class CausalTransformer(nn.Module):
    """A pre-norm causal transformer over a token sequence.

    ``last=k`` returns only the final k positions and skips the last layer's work for the
    others (queries, MLP): Q-Transformer and BC only read their action tokens.
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, ignore: torch.Tensor, last: int | None = None) -> torch.Tensor:
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        # A fully-masked row can't happen: the first instruction word is never padding and
        # every token may attend to it.
        attend = (causal & ~ignore[:, None, :])[:, None]
        x = tokens
        for i, block in enumerate(self.blocks):
            x = block(x, attend, last if i == len(self.blocks) - 1 else None)
        return self.norm(x)
