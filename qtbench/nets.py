"""The shared transformer backbone: instruction words and a window of states as tokens.

Q-Transformer and the RT-1 style BC baseline use the same backbone, so a comparison
between them measures the learning rule, not the architecture. Instruction words are
kept as separate tokens (not mean-pooled) because word order carries meaning:
"move the orange near the red can" is not "move the red can near the orange".
"""

from __future__ import annotations

import torch
from torch import nn

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
        words = self.word(window.instruction) + self.word_pos
        states = (window.states - self.state_mean) / self.state_std
        states = self.state(states) + self.state_pos[-states.shape[1]:]
        tokens = torch.cat([words, states], dim=1)
        ignore = torch.cat([window.instruction == 0, ~window.mask], dim=1)
        return tokens, ignore


class CausalTransformer(nn.Module):
    """A pre-norm causal transformer encoder over a token sequence."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        # Combine into one float mask: a fully-masked row can't happen because the first
        # instruction word is never padding and every token may attend to it.
        mask = torch.zeros(tokens.shape[0], n, n, device=tokens.device, dtype=tokens.dtype)
        mask = mask.masked_fill(causal | ignore[:, None, :], float("-inf"))
        heads = self.layers.layers[0].self_attn.num_heads
        mask = mask.repeat_interleave(heads, dim=0)
        return self.norm(self.layers(tokens, mask=mask))
