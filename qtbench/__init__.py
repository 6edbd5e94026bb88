"""qtbench: offline RL on language-conditioned robot manipulation (the Q-Transformer setting)."""

__version__ = "0.1.0"

from qtbench.envs import register_envs  # noqa: E402

register_envs()
