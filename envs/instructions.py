"""Every instruction of the suite, the skill it belongs to, and the tokeniser that turns it into ids.

The grammar mirrors the paper's three skill families (drawer pick-and-place, open/close
drawer, move object near object). Counts: 3 open + 3 close + 18 pick-place + 42 move-near
= 66 instructions (the paper evaluates 72).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

DRAWERS = ("top", "middle", "bottom")
# The graspable objects of the scene, named as a person would say them.
OBJECTS = (
    "red can",
    "green apple",
    "orange",
    "blue chip bag",
    "brown rxbar",
    "purple eggplant",
    "white cup",
    "yellow sponge",
)
# Objects that the drawer pick-and-place skill moves between drawers and the counter.
DRAWER_OBJECTS = ("red can", "green apple", "yellow sponge")
# Objects that the move-near skill moves and targets (the sponge lives in drawers).
MOVE_NEAR_OBJECTS = OBJECTS[:7]

SKILLS = ("drawer_open", "drawer_close", "pick_place", "move_near")
# The multi-task task: every instruction of every skill in one env (the paper's setting).
MULTI_TASK = "all"
# The paper's reporting categories, each a set of skills.
CATEGORIES = {
    "drawer pick and place": ("pick_place",),
    "open and close drawer": ("drawer_open", "drawer_close"),
    "move object near target": ("move_near",),
}


@dataclass(frozen=True)
class Instruction:
    """One language instruction and the arguments its success predicate needs."""

    text: str
    skill: str
    drawer: str | None = None
    obj: str | None = None
    target: str | None = None  # move_near: the object to move near
    direction: str | None = None  # pick_place: "out" (drawer -> counter) or "in"


def _build() -> tuple[Instruction, ...]:
    out = []
    for drawer in DRAWERS:
        out.append(Instruction(f"open the {drawer} drawer", "drawer_open", drawer=drawer))
    for drawer in DRAWERS:
        out.append(Instruction(f"close the {drawer} drawer", "drawer_close", drawer=drawer))
    for obj in DRAWER_OBJECTS:
        for drawer in DRAWERS:
            out.append(
                Instruction(
                    f"pick the {obj} from the {drawer} drawer and place it on the counter",
                    "pick_place", drawer=drawer, obj=obj, direction="out",
                )
            )
            out.append(
                Instruction(
                    f"place the {obj} into the {drawer} drawer",
                    "pick_place", drawer=drawer, obj=obj, direction="in",
                )
            )
    for obj, target in permutations(MOVE_NEAR_OBJECTS, 2):
        out.append(Instruction(f"move the {obj} near the {target}", "move_near", obj=obj, target=target))
    return tuple(out)


INSTRUCTIONS: tuple[Instruction, ...] = _build()
BY_TEXT = {ins.text: ins for ins in INSTRUCTIONS}


def instructions_for(skill: str) -> tuple[Instruction, ...]:
    """The instructions of one skill, or all of them for MULTI_TASK."""
    if skill == MULTI_TASK:
        return INSTRUCTIONS
    return tuple(ins for ins in INSTRUCTIONS if ins.skill == skill)


# ---- tokeniser -------------------------------------------------------------------------
PAD_ID = 0
UNK_ID = 1
VOCABULARY: tuple[str, ...] = ("<pad>", "<unk>") + tuple(
    sorted({word for ins in INSTRUCTIONS for word in ins.text.split()})
)
WORD_TO_ID = {word: i for i, word in enumerate(VOCABULARY)}
MAX_TOKENS = max(len(ins.text.split()) for ins in INSTRUCTIONS)
# Text-space settings for the observation's instruction field (spaces must be allowed).
TEXT_CHARSET = frozenset(" abcdefghijklmnopqrstuvwxyz")
TEXT_MAX_LENGTH = 96


def tokenize(text: str) -> np.ndarray:
    """Instruction text -> int64 ids of length MAX_TOKENS (lowercased words, PAD-filled)."""
    ids = [WORD_TO_ID.get(w, UNK_ID) for w in text.lower().split()][:MAX_TOKENS]
    out = np.full(MAX_TOKENS, PAD_ID, dtype=np.int64)
    out[: len(ids)] = ids
    return out


def tokenize_many(texts: list[str] | np.ndarray) -> np.ndarray:
    """Tokenise a batch; repeated texts are tokenised once (datasets repeat them per step)."""
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    table = np.stack([tokenize(t) for t in unique]) if len(unique) else np.zeros((0, MAX_TOKENS), np.int64)
    return table[inverse.reshape(-1)]
