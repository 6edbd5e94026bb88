"""The Q-Transformer paper's real-robot results, kept as data so the leaderboard can show them beside ours.

Source: Chebotar et al., "Q-Transformer: Scalable Offline Reinforcement Learning via
Autoregressive Q-Functions", CoRL 2023, arXiv:2309.10150 — Table 1, real-world
success rates (percent) on 72 language instructions, grouped into three categories.
The category names are the keys of ``qtbench.envs.instructions.CATEGORIES``.
"""

from __future__ import annotations

PAPER_CITATION = (
    "Chebotar et al., Q-Transformer: Scalable Offline Reinforcement Learning via "
    "Autoregressive Q-Functions, CoRL 2023, arXiv:2309.10150, Table 1 (real robot)"
)

# Column order of the paper's table; the last column is the mean of the three categories.
PAPER_COLUMNS: tuple[str, ...] = (
    "drawer pick and place",
    "open and close drawer",
    "move object near target",
    "average",
)

# Paper method name -> (qtbench algorithm name it corresponds to, success % per column).
# RT-1 is the paper's behaviour-cloning baseline; our `bc` is RT-1 style.
PAPER_RESULTS: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "Q-Transformer": ("q_transformer", (64.0, 33.0, 71.0, 56.0)),
    "Decision Transformer": ("dt", (49.0, 11.0, 40.0, 33.0)),
    "IQL": ("iql", (11.0, 11.0, 60.0, 27.0)),
    "RT-1": ("bc", (17.0, 0.0, 58.0, 25.0)),
}
