"""Stable-Baselines3 interop: a wrapper that flattens the Dict/Text observation into one Box.

SB3 cannot handle Text spaces, so the instruction becomes a one-hot over the env's
instruction list (``encoding="onehot"``) or the tokeniser's word ids (``"tokens"``),
appended to the state vector.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qtbench.envs.instructions import MAX_TOKENS, VOCABULARY, tokenize

ENCODINGS = ("onehot", "tokens")


class FlatObservation(gym.ObservationWrapper):
    """obs -> float32 [state, instruction encoding]."""

    def __init__(self, env: gym.Env, encoding: str = "onehot"):
        super().__init__(env)
        if encoding not in ENCODINGS:
            from qtbench.errors import unknown_name

            raise unknown_name("instruction encoding", encoding, ENCODINGS)
        self.encoding = encoding
        self.texts = [ins.text for ins in env.unwrapped.instructions]
        self.index = {text: i for i, text in enumerate(self.texts)}
        state = env.observation_space["state"]
        if encoding == "onehot":
            low, high = np.zeros(len(self.texts)), np.ones(len(self.texts))
        else:
            low, high = np.zeros(MAX_TOKENS), np.full(MAX_TOKENS, len(VOCABULARY) - 1)
        self.observation_space = spaces.Box(
            np.concatenate([state.low, low]).astype(np.float32),
            np.concatenate([state.high, high]).astype(np.float32),
            dtype=np.float32,
        )

    def encode(self, text: str) -> np.ndarray:
        if self.encoding == "tokens":
            return tokenize(text).astype(np.float32)
        out = np.zeros(len(self.texts), dtype=np.float32)
        out[self.index[text]] = 1.0
        return out

    def observation(self, observation: dict) -> np.ndarray:
        return np.concatenate([observation["state"], self.encode(observation["instruction"])]).astype(np.float32)


def make_sb3_env(task: str, encoding: str = "onehot", **kwargs) -> gym.Env:
    """A qtbench task wrapped for SB3 (Box observations)."""
    from qtbench.envs import make_env

    return FlatObservation(make_env(task, **kwargs), encoding)
