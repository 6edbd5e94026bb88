"""The shared transformer pieces: instruction encoder, backbone, action tokens, greedy decoding.

Q-Transformer and the RT-1 style BC baseline use the same network token for token
(``ActionTokenTransformer``), and the Decision Transformer uses the same instruction
encoder and backbone, so a comparison between them measures the learning rule, not the
architecture.

The sequence is ``[instruction, s_1..s_H, action tokens]``. The instruction is ONE
conditioning token, as in the paper (a sentence embedding conditions RT-1's image
encoder), not one token per word: words attend to each other once per *distinct*
instruction in a batch (a task has at most a few dozen, a batch of 256 repeats them), and
the result is gathered to the samples. Positions feed that attention, so word order
carries meaning: "move the orange near the red can" is not "move the red can near the
orange". Acting caches the context's keys and values, so each action dimension costs one
token, not a pass over the whole sequence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import EnvSpecInfo, Window
from qtbench.errors import QtbenchError

PAD_ID = 0  # instruction token id of padding (qtbench.envs.instructions.PAD_ID)
AMP_MODES = ("none", "bf16")  # values of the transformer configs' ``amp`` field (--amp)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes: bfloat16 matmuls under ``amp="bf16"`` (CPU and CUDA).

    Parameters, optimiser state and checkpoints stay float32; Q and logit heads run in
    float32 (``float32_head``). No loss scaling: bfloat16 has float32's exponent range.
    """
    if amp not in AMP_MODES:
        raise QtbenchError(f"amp={amp!r} is not a precision mode", f"use one of: {', '.join(AMP_MODES)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def float32_head(head: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """``head(h)`` in float32 even under autocast: Q values feed Bellman targets that differ
    by a factor gamma = 0.98, finer than bfloat16's 8-bit mantissa near 1."""
    with torch.autocast(h.device.type, enabled=False):
        return head(h.float())


class _Block(nn.Module):
    """Pre-norm self-attention and GELU MLP, each with a residual connection."""

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

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, heads, n, d/heads) of tokens x (B, n, d)."""
        d = x.shape[-1]
        k, v = F.linear(self.norm1(x), self.qkv.weight[d:], self.qkv.bias[d:]).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor, last: int | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, n, d) new tokens after the ``past`` (keys, values) of m earlier ones;
        attend (B, 1, n, m + n) True = may attend. Returns the last ``last`` rows (all
        when None) and the keys/values of all m + n tokens."""
        d = x.shape[-1]
        h = self.norm1(x)
        k, v = F.linear(h, self.qkv.weight[d:], self.qkv.bias[d:]).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if last is not None:  # keys/values from every token, queries only from the kept ones
            x, h, attend = x[:, -last:], h[:, -last:], attend[:, :, -last:]
        q = self._heads(F.linear(h, self.qkv.weight[:d], self.qkv.bias[:d]))
        # Attention written out: for our short sequences (< 16 tokens) two batched matmuls
        # measured faster than torch's fused CPU kernel, forward and backward.
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        weights = F.dropout(scores.masked_fill(~attend, float("-inf")).softmax(-1), self.dropout, self.training)
        a = weights @ v
        x = x + self.drop(self.proj(a.transpose(1, 2).flatten(2)))
        return x + self.drop(self.mlp(self.norm2(x))), (k, v)


class InstructionEncoder(nn.Module):
    """Instruction token ids (B, L) -> one conditioning vector (B, d) per sample.

    Word embeddings plus positions, one self-attention block in which every word sees
    every word, a mean over the words (padding excluded) and a LayerNorm.
    """

    def __init__(self, vocab_size: int, max_tokens: int, d_model: int, n_heads: int):
        super().__init__()
        self.word = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        # Positions at the words' scale (both N(0, 1)): the block's MLP then binds each word to
        # its place from the start, so reordered words differ by a lot, not by init noise.
        self.pos = nn.Parameter(torch.randn(max_tokens, d_model))
        self.block = _Block(d_model, n_heads, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, instruction: torch.Tensor) -> torch.Tensor:
        if instruction.device.type != "cpu":
            # Finding the distinct rows and lengths has data-dependent sizes, which would stall
            # the GPU every call; there, encoding every row as it is costs less than that wait.
            return self.encode(instruction)
        distinct, inverse = torch.unique(instruction, dim=0, return_inverse=True)
        # Encode rows of equal length together, trailing padding dropped: ~8 words, not 14.
        length = ((distinct != PAD_ID) * torch.arange(1, distinct.shape[1] + 1)).amax(dim=1).clamp_min(1)
        groups = [(length == n).nonzero()[:, 0] for n in length.unique().tolist()]
        encoded = torch.cat([self.encode(distinct[rows, : int(length[rows[0]])]) for rows in groups])
        slot = torch.empty_like(length)
        slot[torch.cat(groups)] = torch.arange(len(slot))  # distinct row -> its row in ``encoded``
        return encoded[slot[inverse]]

    def encode(self, instruction: torch.Tensor) -> torch.Tensor:
        """The encoding of each row, computed for every row given."""
        words = instruction != PAD_ID
        n = instruction.shape[1]
        x = self.word(instruction) + self.pos[:n]
        # Every token attends to the words (and to the first slot, so that an all-padding row
        # has something to attend to); padding outputs are never read: the mean skips them.
        first = torch.arange(n, device=instruction.device) == 0
        x, _ = self.block(x, (words | first)[:, None, None, :])
        pooled = (x * words[..., None]).sum(1) / words.sum(1, keepdim=True).clamp_min(1)
        return self.norm(pooled)


class ContextTokens(nn.Module):
    """Window -> token sequence [instruction, s_1..s_H] and its key padding mask (True = ignore)."""

    def __init__(self, spec: EnvSpecInfo, history: int, d_model: int, n_heads: int):
        super().__init__()
        self.instruction = InstructionEncoder(spec.vocab_size, spec.max_tokens, d_model, n_heads)
        self.state = nn.Sequential(nn.Linear(spec.state_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.state_pos = nn.Parameter(torch.randn(history, d_model) * 0.02)
        mean = torch.tensor(spec.state_mean or [0.0] * spec.state_dim, dtype=torch.float32)
        std = torch.tensor(spec.state_std or [1.0] * spec.state_dim, dtype=torch.float32)
        self.register_buffer("state_mean", mean)
        self.register_buffer("state_std", std.clamp_min(1e-3))

    def forward(self, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        states = (window.states - self.state_mean) / self.state_std
        states = self.state(states) + self.state_pos[-states.shape[1]:]
        instruction = self.instruction(window.instruction)[:, None].to(states.dtype)
        tokens = torch.cat([instruction, states], dim=1)
        never = window.mask.new_zeros(window.mask.shape[0], 1)  # the instruction token is never padding
        ignore = torch.cat([never, ~window.mask], dim=1)
        return tokens, ignore


@dataclass
class KVCache:
    """Per-block keys and values of the tokens seen so far, and which of them to ignore."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    ignore: torch.Tensor  # (B, m) True = padding


class CausalTransformer(nn.Module):
    """A pre-norm causal transformer over a token sequence.

    ``last=k`` returns only the final k positions and skips the last layer's work for the
    others (queries, MLP): Q-Transformer and BC only read their action tokens. ``prefill``
    and ``decode`` split the same computation into a context and tokens appended later.
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, ignore: torch.Tensor, last: int | None = None) -> torch.Tensor:
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        # A fully-masked row can't happen: the first token (the instruction) is never
        # padding and every token may attend to it.
        attend = (causal & ~ignore[:, None, :])[:, None]
        x = tokens
        for i, block in enumerate(self.blocks):
            x, _ = block(x, attend, last if i == len(self.blocks) - 1 else None)
        return self.norm(x)

    def prefill(self, tokens: torch.Tensor, ignore: torch.Tensor) -> KVCache:
        """The keys/values every block computes for the context ``tokens`` (no outputs)."""
        n = tokens.shape[1]
        attend = (torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril() & ~ignore[:, None, :])[:, None]
        layers, x = [], tokens
        for block in self.blocks[:-1]:
            x, kv = block(x, attend)
            layers.append(kv)
        layers.append(self.blocks[-1].keys_values(x))  # the last block's outputs are never read
        return KVCache(layers, ignore)

    def decode(self, cache: KVCache, tokens: torch.Tensor) -> torch.Tensor:
        """Outputs for ``tokens`` (B, n, d) appended after the cached ones; extends the cache."""
        b, n = tokens.shape[:2]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril().expand(b, n, n)
        attend = torch.cat([~cache.ignore[:, None, :].expand(b, n, -1), causal], dim=2)[:, None]
        x = tokens
        for i, block in enumerate(self.blocks):
            x, cache.layers[i] = block(x, attend, past=cache.layers[i])
        cache.ignore = torch.cat([cache.ignore, cache.ignore.new_zeros(b, n)], dim=1)
        return self.norm(x)


def greedy_decode(
    logits_at: Callable[[torch.Tensor, int], torch.Tensor], batch_size: int, action_dim: int, device: Any
) -> torch.Tensor:
    """Bins (B, A) chosen dimension by dimension, each argmax conditioned on earlier choices.

    ``logits_at(bins, i)`` returns the (B, n) scores of dimension i given ``bins[:, :i]``;
    it is called for i = 0, 1, .. in order.
    """
    bins = torch.zeros(batch_size, action_dim, dtype=torch.long, device=device)
    for i in range(action_dim):
        bins[:, i] = logits_at(bins, i).argmax(dim=-1)
    return bins


class ActionTokenTransformer(nn.Module):
    """Context tokens, then A action tokens; the output at action token i is read by
    dimension i's head (Q values for Q-Transformer, bin logits for BC).

    Action token 0 is a learned start embedding; action token i > 0 embeds the bin chosen
    for dimension i-1 (each dimension has its own bin embeddings), and every action token
    gets its dimension's embedding. Causal attention: output i never sees bins >= i.
    """

    def __init__(self, spec: EnvSpecInfo, history: int, n_bins: int, d_model: int, n_layers: int,
                 n_heads: int, dropout: float):
        super().__init__()
        a = self.action_dim = spec.action_dim
        self.context = ContextTokens(spec, history, d_model, n_heads)
        self.backbone = CausalTransformer(d_model, n_layers, n_heads, dropout)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.bin_embed = nn.Embedding(max(a - 1, 1) * n_bins, d_model)  # row i*n + b: bin b of dimension i
        nn.init.normal_(self.bin_embed.weight, std=0.02)
        self.dim_embed = nn.Parameter(torch.randn(a, d_model) * 0.02)
        self.register_buffer("bin_offset", torch.arange(max(a - 1, 1)) * n_bins, persistent=False)

    def action_tokens(self, bins: torch.Tensor | None, first: int, count: int, batch: int) -> torch.Tensor:
        """Tokens (B, count, d) of dimensions first..first+count-1; ``bins`` (B, >= first+count-1)."""
        parts = [self.start.expand(batch, 1, -1)] if first == 0 else []
        lo, hi = max(first, 1), first + count
        if hi > lo:
            parts.append(self.bin_embed(bins[:, lo - 1 : hi - 1] + self.bin_offset[lo - 1 : hi - 1]))
        return torch.cat(parts, dim=1) + self.dim_embed[first:hi]

    def forward(self, window: Window, bins: torch.Tensor | None, n_tokens: int | None = None) -> torch.Tensor:
        """Outputs (B, n_tokens, d) at action tokens 0..n_tokens-1, the bins fed in teacher-forced.

        ``bins`` (B, >= n_tokens-1) are the bins of the earlier dimensions (the dataset
        action when training); it may be None when ``n_tokens`` is 1.
        """
        k = self.action_dim if n_tokens is None else n_tokens
        ctx, ignore = self.context(window)
        b = ctx.shape[0]
        seq = torch.cat([ctx, self.action_tokens(bins, 0, k, b).to(ctx.dtype)], dim=1)
        return self.backbone(seq, torch.cat([ignore, ignore.new_zeros(b, k)], dim=1), last=k)

    def greedy(self, window: Window, head: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """Greedy bins (B, A): ``head(h (B, d), i)`` scores dimension i; the context's keys
        and values are computed once and each dimension adds one token."""
        ctx, ignore = self.context(window)
        b = ctx.shape[0]
        cache = self.backbone.prefill(ctx, ignore)

        def logits_at(bins: torch.Tensor, i: int) -> torch.Tensor:
            return head(self.backbone.decode(cache, self.action_tokens(bins, i, 1, b).to(ctx.dtype))[:, 0], i)

        return greedy_decode(logits_at, b, self.action_dim, ctx.device)
