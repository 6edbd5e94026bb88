"""Conservative Q-Learning (Kumar et al., 2020), CQL(H) with a SAC actor, for continuous actions.

This is the paper's simulated comparison (QT-Opt with CQL), here on continuous actions
with the same critic architecture as IQL (``qtbench.ensemble_mlp.ObsNet``: 2x256 MLP on
the state and an order-aware instruction encoding, twin Q as one batched network).

Critic loss per twin Q_j:

    TD:           (Q_j(s, a) - y)^2,  y = R_n + gamma^n * min_j Qtarget_j(s', a'),  a' ~ pi(s')
    conservative: cql_alpha * temperature * logsumexp_k(Q_j(s, a_k) / temperature - log mu(a_k)) - Q_j(s, a)

where the a_k are ``num_sampled`` uniform actions (density mu = 2^-A on [-1, 1]^A) and as
many policy samples at s and at s' (density pi(a_k | .)): the importance-weighted estimate
of log integral exp Q(s, a) da of the CQL paper's CQL(H). The actor is SAC's tanh-Gaussian
with automatic entropy tuning (target entropy -A); no entropy bonus in the backup.

Settings: critic lr 3e-4, actor (and entropy temperature) lr 1e-4, batch 256, Polyak 0.005,
10 sampled actions per kind. ``cql_alpha`` = 1.0, not the CQL paper's 5.0 for locomotion:
the conservative term's gradient per sample is O(1) whatever the reward scale, while the
TD term's is O(TD error), and with this benchmark's unscaled sparse {0, 1} reward Q lies in
[0, 1] and TD errors are small (locomotion returns are in the hundreds), so weight 5 would
let the regulariser dominate the Bellman backup; 1.0 is also the conservative weight of the
Q-Transformer paper, which keeps the two regularisers comparable. The search (`qtbench tune
--algo cql`, drawer_open) measured the opposite for success: weight 5 on the unscaled reward
won (30.8% against 5.3% with weight 1) and is frozen. Its values fall far below any return
during training, at weight 1 almost as far (Q of demo actions about -16 for returns in
[0, 1] at step 3000, `qtbench probe`), while still ranking the demo action above a similar
state's failure action in 72-74% of pairs (README, Diagnostics).
``conservative=False`` (``--no-conservative``) drops the term, leaving offline SAC.
Normalised state features are clipped to +-10 (``state_clip``, as IQL's: see
``qtbench.ensemble_mlp``); unclipped, CQL's TD loss grew from 3.5 to 445 over its 3000 steps
on drawer_open.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qtbench.algorithms.base import AlgoConfig, Batch, EnvSpecInfo, Window
from qtbench.algorithms.ranges import ranged
from qtbench.algorithms.torch_utility import clamp_log_std, polyak_update, shifted_return
from qtbench.ensemble_mlp import Instructions, ObsNet, ObsNetConfig
from qtbench.nets import distinct_instructions


@dataclass
class CQLConfig(ObsNetConfig):
    dataset: str = "mixed"
    history: int = 1
    actor_learning_rate: float = ranged(1e-4, above=0)  # also the entropy temperature's
    tau: float = ranged(0.005, above=0, at_most=1)  # Polyak rate of the target Q
    conservative: bool = True
    cql_alpha: float = ranged(1.0, at_least=0)  # weight of the conservative penalty
    cql_temperature: float = ranged(1.0, above=0)  # temperature of its logsumexp
    num_sampled: int = ranged(10, at_least=1)  # actions per kind (uniform, pi(s), pi(s')) in the logsumexp


# `qtbench tune --algo cql` tries these settings on drawer_open (at most 8). The first is
# CQL's published choice for a sparse binary reward: the CQL authors' AntMaze reward
# transform 4 * (r - 0.5) with the paper's conservative weight 5; then weight 1 (ours) and
# a lower learning rate, with and without the transform.
TUNING_SETTINGS: list[dict[str, object]] = [
    {"reward_scale": 4.0, "reward_shift": -2.0, "cql_alpha": alpha, "learning_rate": lr}
    for alpha in (5.0, 1.0) for lr in (3e-4, 1e-4)
] + [{"cql_alpha": alpha} for alpha in (5.0, 1.0)]


def conservative_gap(
    q_data: torch.Tensor, q_sampled: torch.Tensor, log_density: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-state CQL(H) term: temperature * logsumexp((Q(s, a_k) - log density(a_k)) / temperature) - Q(s, a).

    q_data (..., B), q_sampled and log_density (..., B, K) -> (..., B).
    """
    logits = (q_sampled - log_density) / temperature
    return temperature * torch.logsumexp(logits, dim=-1) - q_data


def tanh_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised tanh(N(mean, std)) sample and its log density (with the tanh Jacobian)."""
    pre = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), stable for large |u|.
    log_prob = log_prob - (2.0 * (math.log(2.0) - pre - F.softplus(-2.0 * pre))).sum(-1)
    return torch.tanh(pre), log_prob


class CQL:
    """CQL(H) with twin Q, Polyak target, SAC tanh-Gaussian actor and automatic entropy tuning."""

    config_class: ClassVar[type[AlgoConfig]] = CQLConfig
    # Training budget (recorded in config.json as "steps" and "default_steps"): Q-Transformer's,
    # since the budgets are sized to be close in wall-clock time (see qtbench/q_transformer.py).
    default_steps: ClassVar[int] = 3000
    display_rank: ClassVar[int] = 4
    headline: ClassVar[bool] = False  # not in the default sweep: run it with --algos cql

    def __init__(self, spec: EnvSpecInfo, config: CQLConfig, device: str = "cpu"):
        self.spec, self.config, self.device = spec, config, torch.device(device)
        c = config
        net = c.net_kwargs(spec)
        self.q = ObsNet(members=2, out_dim=1, with_action=True, **net).to(self.device)
        self.actor = ObsNet(members=1, out_dim=2 * spec.action_dim, with_action=False, **net).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros((), device=self.device))
        self.target_entropy = -float(spec.action_dim)
        # Each loss is backpropagated only into its own parameters, so one Adam with a
        # learning rate per group does the three SAC/CQL optimiser steps at once.
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.q.parameters()), "lr": c.learning_rate},
                {"params": list(self.actor.parameters()), "lr": c.actor_learning_rate},
                {"params": [self.log_alpha], "lr": c.actor_learning_rate},
            ],
            fused=True,
        )
        # The sampling noise has its own generator, seeded from torch's, saved with the state.
        self.generator = torch.Generator(self.device).manual_seed(int(torch.randint(2**62, (1,)).item()))

    def _policy(self, window: Window, instructions: Instructions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(window, None, instructions)[0].chunk(2, dim=-1)
        return mean, clamp_log_std(log_std)

    def _sample(self, mean: torch.Tensor, log_std: torch.Tensor, per_state: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_state`` samples for each of B states: actions (B, K, A), log densities (B, K)."""
        noise = torch.randn(mean.shape[0], per_state, mean.shape[1], generator=self.generator, device=mean.device)
        return tanh_gaussian_sample(mean[:, None], log_std[:, None], noise)

    def update(self, batch: Batch) -> dict[str, float]:
        c, k = self.config, self.config.num_sampled
        action = batch.window.actions[:, -1]
        batch_size, action_dim = action.shape

        # The bootstrap window is later in the same episode: same instruction, encoded once.
        ins = distinct_instructions(batch.window.instruction)

        # Actor and entropy temperature (SAC).
        mean, log_std = self._policy(batch.window, ins)
        pi_actions, pi_log_prob = self._sample(mean, log_std, 1 + k)  # sample 0 for the actor, the rest for CQL
        features = self.q.encode(batch.window, ins)
        q_pi = self.q.head(features.detach(), pi_actions[:, 0]).amin(0).squeeze(-1)
        alpha = self.log_alpha.exp()
        actor_loss = (alpha.detach() * pi_log_prob[:, 0] - q_pi).mean()
        alpha_loss = -(self.log_alpha * (pi_log_prob[:, 0].detach() + self.target_entropy)).mean()

        # Critic: TD towards the target Q at a fresh policy action of the next state.
        with torch.no_grad():
            next_mean, next_log_std = self._policy(batch.next_window, ins)
            next_actions, next_log_prob = self._sample(next_mean, next_log_std, 1 + k)
            target_q = self.q_target(batch.next_window, next_actions[:, 0], ins).amin(0).squeeze(-1)
            td_target = shifted_return(batch, c.reward_scale, c.reward_shift) + batch.bootstrap_discount * target_q
        q_data = self.q.head(features, action).squeeze(-1)  # (2, B)
        td_loss = F.mse_loss(q_data, td_target.expand_as(q_data)) * 2  # summed over the twins
        critic_loss = td_loss
        gap = torch.zeros((), device=self.device)
        if c.conservative:
            uniform = torch.rand(batch_size, k, action_dim, generator=self.generator, device=self.device) * 2 - 1
            sampled = torch.cat([uniform, pi_actions[:, 1:].detach(), next_actions[:, 1:]], dim=1)  # (B, 3k, A)
            log_density = torch.cat([
                torch.full((batch_size, k), -action_dim * math.log(2.0), device=self.device),
                pi_log_prob[:, 1:].detach(), next_log_prob[:, 1:],
            ], dim=1)
            repeated = features.repeat_interleave(3 * k, dim=1)  # (2, B * 3k, F)
            q_sampled = self.q.head(repeated, sampled.reshape(-1, action_dim)).reshape(2, batch_size, 3 * k)
            gap = conservative_gap(q_data, q_sampled, log_density, c.cql_temperature).mean(-1).sum()
            critic_loss = td_loss + c.cql_alpha * gap

        self.optimizer.zero_grad(set_to_none=True)
        critic_loss.backward(inputs=list(self.q.parameters()))
        actor_loss.backward(inputs=list(self.actor.parameters()))
        alpha_loss.backward(inputs=[self.log_alpha])
        self.optimizer.step()
        polyak_update(self.q_target, self.q, c.tau)

        loss = critic_loss + actor_loss + alpha_loss
        metrics = torch.stack([
            loss, td_loss, gap, actor_loss, alpha.detach(), q_data.mean(), -pi_log_prob[:, 0].mean(),
        ]).detach().tolist()
        keys = ("loss", "td_loss", "conservative_gap", "actor_loss", "alpha", "q_mean", "entropy")
        return dict(zip(keys, metrics))

    @torch.no_grad()
    def act(self, window: Window) -> np.ndarray:
        mean, _ = self._policy(window)
        return torch.tanh(mean).clamp(-1.0, 1.0).float().cpu().numpy()

    @torch.no_grad()
    def values(self, window: Window, actions: torch.Tensor) -> torch.Tensor:
        """Q of given actions (B, A) -> (B,): the smaller of the two online critics (twin Q)."""
        return self.q(window, actions).amin(0)[:, 0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(), "q_target": self.q_target.state_dict(), "actor": self.actor.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("q", "q_target", "actor"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
