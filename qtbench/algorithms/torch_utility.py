"""Model pieces every algorithm shares, each written once (in the spirit of d3rlpy's ``torch_utility``).

- ``polyak_update``: the soft target-network update (Q-Transformer, IQL, CQL);
- ``StateNormalised``: a module holding the training data's state statistics as the
  buffers ``state_mean``/``state_std`` (the transformer context, DT, the IQL/CQL MLPs), and
  appending the knobs' and objects' positions relative to the gripper (``relative_positions``);
- ``clamp_log_std``: the log-std bounds of the Gaussian policies (IQL, CQL);
- ``to_bins``, ``bin_centres``, ``ActionGrid``, ``greedy_decode``: the action grid of ``n_bins`` equal-width
  bins per dimension and its dimension-by-dimension argmax (Q-Transformer, BC);
- ``shifted_return``, ``check_reward_transform``: the critic's reward transform (IQL, CQL).

Networks live elsewhere (``qtbench.nets``, ``qtbench.ensemble_mlp``); this module holds no
parameters of its own, so moving a piece here leaves every checkpoint's keys unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from qtbench.algorithms.base import Batch, EnvSpecInfo
from qtbench.errors import QtbenchError


# ---- target networks ---------------------------------------------------------------------
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source for every parameter, in place, without autograd."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# ---- state normalisation -----------------------------------------------------------------
STD_FLOOR = 1e-3  # smallest std a feature is divided by (constant features stay finite)


RELATIVE_SCALE = 10.0  # relative positions enter the models in units of 10 cm
RELATIVE_FIELDS = ("handle_pos", "object_pos", "named_pos")  # the state fields (envs.layout) taken relative to the gripper


def relative_positions(states: torch.Tensor) -> torch.Tensor:
    """Each drawer knob's, each object's and each named position (``named_pos``) minus the
    gripper point's, for states in qtbench's layout (``qtbench.envs.layout``): (..., S) ->
    (..., 3 * (knobs + objects + named)), in units of 10 cm; a role the instruction does not
    name (all zeros in the state) stays zero. Reaching is then a function the models read off
    directly instead of a difference of two absolute positions that they must learn to take."""
    from qtbench.envs.layout import FIELDS

    gripper = states[..., FIELDS["gripper_pos"].slice].unsqueeze(-2)
    parts = []
    for name in RELATIVE_FIELDS:
        points = states[..., FIELDS[name].slice].unflatten(-1, FIELDS[name].shape)
        relative = points - gripper
        if name == "named_pos":  # an unnamed role is (0, 0, 0) in the state: it stays zero
            relative = relative * (points != 0).any(dim=-1, keepdim=True)
        parts.append(relative)
    return (torch.cat(parts, dim=-2) * RELATIVE_SCALE).flatten(-2)


class StateNormalised(nn.Module):
    """Base of the modules that read raw states: the training data's per-feature statistics.

    ``spec.state_mean``/``spec.state_std`` become the buffers ``state_mean`` and ``state_std``
    (std floored at ``STD_FLOOR``; 0 and 1 when the spec has no statistics). They are saved
    in the module's state_dict under those names, so a checkpoint normalises as it trained.
    With ``relative``, on states in qtbench's layout, ``normalise`` also appends
    ``relative_positions``; ``input_dim`` is the width of what it returns.
    """

    def __init__(self, spec: EnvSpecInfo, relative: bool = False):
        from qtbench.envs.layout import FIELDS, STATE_DIM

        super().__init__()
        mean = torch.tensor(spec.state_mean or [0.0] * spec.state_dim, dtype=torch.float32)
        std = torch.tensor(spec.state_std or [1.0] * spec.state_dim, dtype=torch.float32)
        self.register_buffer("state_mean", mean)
        self.register_buffer("state_std", std.clamp_min(STD_FLOOR))
        self.relative = relative and spec.state_dim == STATE_DIM
        extra = sum(FIELDS[name].size for name in RELATIVE_FIELDS) if self.relative else 0
        self.input_dim = spec.state_dim + extra

    def normalise(self, states: torch.Tensor) -> torch.Tensor:
        """(states - mean) / std over the last (feature) dimension, then the relative positions."""
        normalised = (states - self.state_mean) / self.state_std
        if not self.relative:
            return normalised
        return torch.cat([normalised, relative_positions(states)], dim=-1)


# ---- Gaussian policies -------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # std within [0.0067, 7.4], so log-densities stay finite


def clamp_log_std(log_std: torch.Tensor) -> torch.Tensor:
    """log_std clamped to [LOG_STD_MIN, LOG_STD_MAX] (gradients pass inside the bounds only)."""
    return log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


# ---- discretised actions -----------------------------------------------------------------
def to_bins(actions: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Continuous actions in [-1, 1] -> int64 bin indices in [0, n_bins); equal-width bins."""
    scaled = (actions.clamp(-1.0, 1.0) + 1.0) * (n_bins / 2.0)
    return scaled.floor().long().clamp_(0, n_bins - 1)


def bin_centres(bins: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin indices -> the continuous action at each bin's centre (float32, inside (-1, 1))."""
    return (bins.float() + 0.5) * (2.0 / n_bins) - 1.0


def decoding_order(action_dim: int, gripper_first: bool) -> torch.Tensor:
    """The action dimensions in the order Q-Transformer and BC decode them: as they are
    ([dx, dy, dz, gripper]), or with the gripper (the last dimension) first."""
    dims = torch.arange(action_dim)
    return torch.cat([dims[-1:], dims[:-1]]) if gripper_first else dims


class ActionGrid:
    """Q-Transformer's and BC's action grid: ``to_bins`` of the dimensions in decoding order,
    and back to actions in the env's order."""

    def __init__(self, n_bins: int, action_dim: int, gripper_first: bool, device: Any = "cpu"):
        self.n_bins = n_bins
        self.order = decoding_order(action_dim, gripper_first).to(device)
        self.inverse = self.order.argsort()

    def bins(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions (..., A) in the env's order -> bins (..., A) in decoding order."""
        return to_bins(actions[..., self.order], self.n_bins)

    def actions(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins (..., A) in decoding order -> bin centres (..., A) in the env's order."""
        return bin_centres(bins, self.n_bins)[..., self.inverse]


def greedy_decode(
    scores_at: Callable[[torch.Tensor, int], torch.Tensor], batch_size: int, action_dim: int, device: Any
) -> torch.Tensor:
    """Bins (B, A) chosen dimension by dimension, each argmax conditioned on earlier choices.

    ``scores_at(bins, i)`` returns the (B, n_bins) scores (Q values or logits) of dimension
    i given ``bins[:, :i]``; the later columns of ``bins`` are zeros it must not read. It is
    called once per dimension, in order, so it may keep state between calls: Q-Transformer's
    and BC's extend a key/value cache by dimension i's token (``CausalTransformer.extend``).
    """
    bins = torch.zeros(batch_size, action_dim, dtype=torch.long, device=device)
    for i in range(action_dim):
        bins[:, i] = scores_at(bins, i).argmax(dim=-1)
    return bins


# ---- the critic's rewards ----------------------------------------------------------------
def shifted_return(batch: Batch, reward_scale: float, reward_shift: float) -> torch.Tensor:
    """The batch's n-step return of rewards r' = reward_scale * r + reward_shift.

    Exact for n_step 1 (a return of one reward); ``check_reward_transform`` refuses a
    shift with longer returns, whose length this batch does not carry."""
    return reward_scale * batch.nstep_return + reward_shift


def check_reward_transform(config: Any) -> None:
    """QtbenchError for a reward shift with n-step returns (``shifted_return`` is exact for n = 1)."""
    if config.reward_shift and config.n_step != 1:
        raise QtbenchError(
            f"reward_shift={config.reward_shift} needs n_step=1 (got n_step={config.n_step})",
            "use --set n_step=1 with a reward shift, or reward_shift=0 with n-step returns",
        )
