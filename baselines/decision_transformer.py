"""Decision Transformer (Chen et al., 2021): behaviour cloning conditioned on the return to go.

The window of the last ``history`` steps becomes the token sequence

    [I,  R_1, s_1, a_1,  R_2, s_2, a_2,  ...,  R_H, s_H, a_H]

(the instruction first, then return-to-go, state and action tokens per step, each step's
tokens plus its timestep embedding). The instruction is one token I, read from its words by
the one-block encoder that Q-Transformer and BC use (``nets.instruction_tokens``), so the
three transformer algorithms read instructions alike; ``instruction_token=False`` puts the
words w_1..w_L there instead. Under the causal mask the output at state token s_h has
seen R_1..R_h, s_1..s_h and a_1..a_{h-1}, and predicts a_h; the action tokens are inputs
only. Training minimises the MSE between tanh(prediction) and the dataset action at every
valid (non-padding) step, on all data (demonstrations and failures), so the returns-to-go
tell successes from failures. At evaluation the return to go starts at ``target_return``
(1.0: success) and is reduced by the rewards received (``RolloutWindows`` keeps it; the
evaluator passes ``config.target_return`` to it).

Defaults follow the reference implementation (embedding 128, 3 layers, 1 head, dropout 0.1,
AdamW lr 1e-4, weight decay 1e-4, linear warm-up, batch 64, gradient clip 0.25) with a
shorter warm-up and context (our episodes are ~100 steps, not 1000). Returns are not
rescaled: with a sparse {0, 1} reward they are already in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from qtbench.algorithms.base import AlgoConfig, Batch, EnvSpecInfo, Window
from qtbench.algorithms.ranges import added, ranged
from qtbench.algorithms.torch_utility import StateNormalised
from qtbench.nets import (
    PAD_ID, CausalTransformer, amp_field, autocast, instruction_prefix, instruction_tokens, resolve_amp,
)

TOKENS_PER_STEP = 3  # return-to-go, state, action
STATE_SLOT = 1  # index of the state token within a step


@dataclass
class DTConfig(AlgoConfig):
    dataset: str = "mixed"
    history: int = 10  # context length K in steps
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = ranged(1e-4, at_least=0)  # AdamW
    warmup_steps: int = ranged(1000, at_least=0)  # linear learning-rate warm-up
    grad_clip: float = ranged(0.25, above=0)  # max global gradient norm
    d_model: int = ranged(128, at_least=1)  # transformer width
    n_layers: int = ranged(3, at_least=1)  # transformer blocks
    n_heads: int = ranged(1, at_least=1, divides="d_model")  # attention heads
    dropout: float = ranged(0.1, at_least=0, below=1)
    amp: str = amp_field()  # precision of the forward passes: "none" (float32), "bf16", "auto" (nets.amp_field)
    # The instruction as one token (a one-block causal encoder over the words, read at the last
    # word, as Q-Transformer's and BC's ``instruction_token``) instead of its words as tokens:
    # each sample then runs 1 + 3H tokens instead of up to 14 + 3H.
    instruction_token: bool = added(True, before=False)


# `qtbench tune --algo dt` tries these settings on drawer_open (at most 8). The first is
# the DT paper's D4RL choice (context 20, learning rate 1e-4, dropout 0.1; the target
# return is the maximum, 1 = success, for a sparse binary reward); then a shorter context,
# a higher learning rate and no dropout.
TUNING_SETTINGS: list[dict[str, object]] = [
    {"history": history, "learning_rate": lr, "dropout": dropout}
    for history in (20, 10) for lr in (1e-4, 3e-4) for dropout in (0.1, 0.0)
]


class DTModel(StateNormalised):
    """Embeds a window as interleaved (R, s, a) tokens after the instruction; predicts actions.

    LayerNorm and dropout act on each token alone, so the words are embedded with them apart
    from the steps (``words``, once per distinct instruction) and the sequence is unchanged."""

    def __init__(self, spec: EnvSpecInfo, config: DTConfig):
        super().__init__(spec, config.relative_positions)
        d = config.d_model
        self.word = nn.Embedding(spec.vocab_size, d, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(spec.max_tokens, d) * 0.02)
        self.encoder = CausalTransformer(d, 1, config.n_heads) if config.instruction_token else None
        self.timestep = nn.Embedding(spec.max_episode_steps + 1, d)
        self.ret = nn.Linear(1, d)
        self.state = nn.Linear(self.input_dim, d)
        self.action = nn.Linear(spec.action_dim, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        self.body = CausalTransformer(d, config.n_layers, config.n_heads, config.dropout)
        self.predict = nn.Linear(d, spec.action_dim)
        self.max_t = spec.max_episode_steps

    def words(self, instruction: torch.Tensor) -> torch.Tensor:
        """Token ids (U, L) -> word tokens (U, L, d)."""
        return self.drop(self.norm(self.word(instruction) + self.word_pos[: instruction.shape[1]]))

    def tokens(self, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3H, d) (R, s, a) tokens after the words, and their ignore mask (True = padding)."""
        batch, steps = window.mask.shape
        time = self.timestep(window.timesteps.clamp(0, self.max_t))
        states = self.normalise(window.states)
        per_step = torch.stack(
            [self.ret(window.returns_to_go[..., None]) + time, self.state(states) + time, self.action(window.actions) + time],
            dim=2,
        ).reshape(batch, steps * TOKENS_PER_STEP, -1)
        return self.drop(self.norm(per_step)), (~window.mask).repeat_interleave(TOKENS_PER_STEP, dim=1)

    def forward(self, window: Window, last_step_only: bool = False) -> torch.Tensor:
        """Predicted actions (B, H, A) in (-1, 1), one per step, each read at that step's state token.

        ``last_step_only`` (acting) computes only the current step's, as (B, 1, A). The
        instruction runs once per distinct instruction (``nets.instruction_prefix``).
        """
        words = instruction_prefix(
            self.body, lambda rows: instruction_tokens(self.words(rows), rows == PAD_ID, self.encoder), window.instruction
        )
        tokens, ignore = self.tokens(window)
        if last_step_only:  # the last two tokens are (s_H, a_H): read s_H
            return torch.tanh(self.predict(self.body(tokens, ignore, last=2, past=words)[:, :1]))
        out = self.body(tokens, ignore, past=words)
        return torch.tanh(self.predict(out[:, STATE_SLOT::TOKENS_PER_STEP]))


class DecisionTransformer:
    """Return-conditioned sequence model trained by action regression."""

    config_class: ClassVar[type[AlgoConfig]] = DTConfig
    # Training budget (recorded in config.json as "steps" and "default_steps"): Q-Transformer's,
    # since the budgets are sized to be close in wall-clock time (see qtbench/q_transformer.py).
    default_steps: ClassVar[int] = 3000
    display_rank: ClassVar[int] = 1
    headline: ClassVar[bool] = True

    def __init__(self, spec: EnvSpecInfo, config: DTConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        self.amp = resolve_amp(config.amp, self.device)  # the precision it runs in here
        self.model = DTModel(spec, config).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        warmup = max(config.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min((step + 1) / warmup, 1.0))

    def update(self, batch: Batch) -> dict[str, float]:
        self.model.train()
        window = batch.window
        with autocast(self.device, self.amp):
            predicted = self.model(window).float()
        valid = window.mask[..., None].to(predicted.dtype)
        loss = ((predicted - window.actions).square() * valid).sum() / (valid.sum() * predicted.shape[-1]).clamp_min(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        # tensors: the training loop reads them from the device once per log interval
        return {"loss": loss.detach(), "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def act(self, window: Window) -> np.ndarray:
        self.model.eval()
        with autocast(self.device, self.amp):
            predicted = self.model(window, last_step_only=True)[:, -1]
        return predicted.clamp(-1.0, 1.0).float().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
