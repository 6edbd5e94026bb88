"""The one protocol every algorithm implements, and the data it is fed.

The training loop, evaluation, checkpointing and the CLI only ever talk to this
protocol, so none of them branches on an algorithm's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

import numpy as np

from qtbench.algorithms.ranges import added, check_ranges, ranged


@dataclass(frozen=True)
class EnvSpecInfo:
    """What a model needs to know about the task to size itself."""

    state_dim: int
    action_dim: int
    vocab_size: int
    max_tokens: int
    max_episode_steps: int
    # Per-feature statistics of the training data's states, for input normalisation.
    state_mean: tuple[float, ...] | None = None
    state_std: tuple[float, ...] | None = None


def _style_names() -> tuple[str, ...]:
    """Every demonstrator style name and role (read lazily: the envs are heavy to import)."""
    from qtbench.envs.plans import STYLES
    from qtbench.envs.policies import ROLES

    return (*ROLES, *dict.fromkeys(name for styles in STYLES.values() for name in styles))


# The dataset splits a config can train on (AlgoConfig.dataset); qtbench.data stores them.
SPLITS = ("demos", "failures", "mixed")


@dataclass
class AlgoConfig:
    """Fields every algorithm config has: they tell the data loader what to sample.

    Each field's valid range is declared beside it (``ranged``) and checked when a config
    is built, so an out-of-range value fails before a run writes anything.
    """

    dataset: str = ranged("mixed", one_of=SPLITS)  # "demos", "failures" or "mixed"
    # Observation window length (current step included). The state holds positions only, no
    # velocities, so one state is not Markov: on drawer_open (3 seeds, 300 episodes each, bf16)
    # history 1 scored Q-Transformer 15.3% and BC 27.8% against 26.4% and 34.3% with 4 (issue 11).
    history: int = ranged(4, at_least=1)
    n_step: int = ranged(1, at_least=1)  # bootstrap horizon of the sampled targets
    gamma: float = ranged(0.98, at_least=0, at_most=1)  # discount per step
    batch_size: int = ranged(256, at_least=1)  # transitions per gradient step
    learning_rate: float = ranged(3e-4, above=0)
    filtered: bool = False  # train only on the successful episodes of the chosen dataset
    # Keep only the demonstrations of these styles (names or robust / fragile, one per skill;
    # qtbench.envs.plans.STYLES); empty = every style. Failures are kept either way.
    demo_styles: tuple[str, ...] = ranged((), each_one_of=_style_names)
    # Bootstrap nothing past a time-limit truncation: an attempt that ran out of time is
    # scored as failed (return 0), as the paper scores its robots' episodes. Off, a
    # truncated episode bootstraps from its last state (Gymnasium's time-limit reading).
    timeout_is_terminal: bool = False
    target_return: float = ranged(1.0)  # return to go that evaluation windows start from (DT reads it)
    # Give the models each knob's and object's position relative to the gripper beside the
    # normalised state (torch_utility.relative_positions; states of qtbench's layout only), the
    # usual state features of manipulation benchmarks. Measured on drawer_open against
    # --set relative_positions=false (300 paired episodes per seed): BC +3.0 points, seeds 0-2
    # 31.7/41.0/39.3 vs 34.3/34.7/34.0; DT -3.6, 46.7/51.7/43.3 vs 55.3/45.0/52.0: no effect beyond
    # the seed noise (issue 16); on by default as the more direct input.
    relative_positions: bool = added(True, before=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """QtbenchError naming every field outside its declared range (subclasses add rules)."""
        check_ranges(self)


def _map_fields(obj: Any, fn: Callable[[Any], Any]) -> Any:
    return dataclasses.replace(obj, **{f.name: fn(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


@dataclass
class Window:
    """``history`` consecutive steps of one episode ending at the current step (index -1).

    Arrays are numpy or torch tensors (``to_torch`` converts); B = batch, H = history,
    S = state dim, A = action dim, L = instruction tokens.
    """

    states: Any  # (B, H, S) float32
    mask: Any  # (B, H) bool; False = padding before the episode's first step
    instruction: Any  # (B, L) int64 token ids (PAD = 0)
    actions: Any  # (B, H, A) float32 in [-1, 1]; in act() the current step's row is zero
    returns_to_go: Any  # (B, H) float32 undiscounted; in act() target return minus rewards so far
    timesteps: Any  # (B, H) int64 step index within the episode (0 at padding)

    def to_torch(self, device: Any = "cpu") -> "Window":
        import torch

        return _map_fields(self, lambda a: torch.as_tensor(a).to(device))


@dataclass
class Batch:
    """One training batch of transitions, each with its window and its bootstrap window."""

    window: Window  # ends at step t; window.actions[:, -1] is the dataset action a_t
    reward: Any  # (B,) r_t
    mc_return: Any  # (B,) discounted Monte-Carlo return-to-go  sum_k gamma^k r_{t+k}
    nstep_return: Any  # (B,) sum_{k<m} gamma^k r_{t+k},  m = min(n_step, steps left in episode)
    next_window: Window  # ends at step t+m
    bootstrap_discount: Any  # (B,) gamma^m, or 0 when the episode terminated within those m steps

    def to_torch(self, device: Any = "cpu") -> "Batch":
        import torch

        return _map_fields(
            self,
            lambda a: a.to_torch(device) if isinstance(a, Window) else torch.as_tensor(a).to(device),
        )


class Algorithm(Protocol):
    """An offline RL or imitation algorithm, as the training loop sees it."""

    config_class: ClassVar[type[AlgoConfig]]
    default_steps: ClassVar[int]  # training budget in gradient steps when a run gives no --steps
    display_rank: ClassVar[int]  # position in leaderboard tables (lower first; ties by name)
    headline: ClassVar[bool]  # whether `qtbench sweep` runs it by default
    config: AlgoConfig

    def __init__(self, spec: EnvSpecInfo, config: AlgoConfig, device: str = "cpu") -> None: ...

    def update(self, batch: Batch) -> dict[str, Any]:
        """One gradient step on a torch batch; returns scalar metrics (loss first): floats or
        0-dim tensors, which the training loop reads from the device once per log interval."""

    def act(self, window: Window) -> np.ndarray:
        """Greedy actions (B, A) in [-1, 1] for a torch window of B environments."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training bit for bit (networks and optimisers)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional (value-based algorithms: q_transformer, iql, cql), used by `qtbench probe`:
    #     def values(self, window: Window, actions: torch.Tensor) -> torch.Tensor
    # the learned Q of the given actions (B, A) in a torch window of B states -> (B,);
    # and (autoregressive Q functions: q_transformer)
    #     def dimension_values(self, window: Window, actions: torch.Tensor) -> torch.Tensor
    # the Q of each action dimension in decoding order -> (B, A), whose last column is values';
    #     decoding_order: list[int]
    # the env's action dimensions in that order.
