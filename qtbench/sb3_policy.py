"""Stable-Baselines3 interop: a trained qtbench policy behind SB3's ``predict`` interface.

``SB3Policy(algo, env)`` keeps one observation window per environment of the SB3
``VecEnv`` (the same ``RolloutWindows`` qtbench's evaluator uses), so any SB3 tool that
calls ``predict(observation, state, episode_start, deterministic)`` — notably
``stable_baselines3.common.evaluation.evaluate_policy`` — runs the policy exactly as
qtbench's own evaluation does. Observations are those of the SB3-wrapped env
(``qtbench.envs.sb3.FlatObservation``): a flat Box holding the state and a one-hot or
word-id encoding of the instruction, which ``flat_decoder`` splits back into state vectors
and instruction texts.

SB3's ``predict`` sees no rewards, so the windows record reward 0 for every step inside an
episode. With this suite's sparse reward that is exact: the only non-zero reward (1.0, on
success) ends the episode, so the return to go a Decision Transformer reads is the target
return throughout, as in qtbench's evaluator.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from qtbench.algorithms.base import Algorithm

Decoder = Callable[[np.ndarray], tuple[np.ndarray, list[str]]]


def _wrapper_attr(env: Any, name: str) -> Any:
    """An attribute of the FlatObservation wrapper inside a gym env or an SB3 VecEnv."""
    if hasattr(env, "get_attr") and hasattr(env, "num_envs"):  # SB3 VecEnv
        return env.get_attr(name, indices=[0])[0]
    return env.get_wrapper_attr(name)


def flat_decoder(env: Any) -> Decoder:
    """Observation decoder for ``qtbench.envs.sb3.FlatObservation`` (either encoding).

    Flat observations are [state, one-hot over the env's instructions] or [state, word ids];
    the decoder returns the states (n, S) and the instruction texts.
    """
    from qtbench.envs.instructions import MAX_TOKENS, VOCABULARY
    from qtbench.errors import QtbenchError

    try:
        encoding, texts = _wrapper_attr(env, "encoding"), list(_wrapper_attr(env, "texts"))
    except AttributeError as err:
        raise QtbenchError(
            "SB3Policy needs an env wrapped by qtbench.envs.sb3.FlatObservation",
            "build it with qtbench.envs.sb3.make_sb3_env(task)",
        ) from err
    width = len(texts) if encoding == "onehot" else MAX_TOKENS
    state_dim = int(env.observation_space.shape[0]) - width

    def decode(obs: np.ndarray) -> tuple[np.ndarray, list[str]]:
        states, code = obs[:, :state_dim], obs[:, state_dim:]
        if encoding == "onehot":
            return states, [texts[i] for i in code.argmax(1)]
        ids = np.rint(code).astype(np.int64)
        return states, [" ".join(VOCABULARY[i] for i in row if i != 0) for row in ids]

    return decode


class SB3Policy:
    """SB3-style ``predict`` over a qtbench ``Algorithm`` (greedy; ``deterministic`` is accepted and ignored)."""

    def __init__(
        self, algo: Algorithm, env: Any, history: int | None = None,
        target_return: float | None = None, device: str = "cpu",
    ):
        """``env``: the FlatObservation-wrapped env, or the SB3 VecEnv of them, to be played."""
        self.algo = algo
        self.history = int(history if history is not None else algo.config.history)
        self.decode = flat_decoder(env)
        self.target_return = float(
            target_return if target_return is not None else algo.config.target_return
        )
        self.device = device
        self.windows: Any = None  # RolloutWindows, sized on the first call
        self.last_actions: np.ndarray | None = None

    def reset(self) -> None:
        """Forget every window: the next ``predict`` starts new episodes in all environments."""
        self.windows, self.last_actions = None, None

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions (n_envs, A) for a batch of flat observations (or (A,) for a single one).

        ``episode_start[i]`` (as SB3's VecEnv loops pass it) begins a new episode in env i.
        """
        from qtbench.data import RolloutWindows

        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        obs = obs[None] if single else obs
        states, instructions = self.decode(obs)
        n = len(obs)
        # Without episode_start (a hand-written loop), an episode is one call sequence: use reset().
        starts = np.zeros(n, bool) if episode_start is None else np.asarray(episode_start, bool).reshape(n)
        if self.windows is None or self.windows.states.shape[0] != n:
            action_dim = self.algo.spec.action_dim  # type: ignore[attr-defined]
            self.windows = RolloutWindows(n, self.history, states.shape[1], action_dim, self.target_return)
            starts = np.ones(n, bool)
        else:
            # Continuing slots get the step they just took; restarted slots are reset below.
            self.windows.record(self.last_actions, np.zeros(n, np.float32), states)
        if starts.any():
            idx = np.flatnonzero(starts)
            self.windows.start(idx, states[idx], [instructions[i] for i in idx])
        actions = np.asarray(self.algo.act(self.windows.window().to_torch(self.device)), np.float32)
        self.last_actions = actions
        return (actions[0] if single else actions), state
