"""The named layout of the state vector: every consumer reads fields by name, never by index.

FIELDS lists the blocks in order, each with its shape and what it holds; ``observation_table``
renders them as the observation table of ManipulationEnv's docstring. All accessors accept a
single state ``(S,)`` or a batch ``(..., S)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qtbench.envs.instructions import DRAWERS, OBJECTS


@dataclass(frozen=True)
class Field:
    """One named block of the state vector."""

    name: str
    shape: tuple[int, ...]
    start: int
    description: str  # what the block holds, with its unit

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


def _fields(spec: list[tuple[str, tuple[int, ...], str]]) -> dict[str, Field]:
    out, start = {}, 0
    for name, shape, description in spec:
        out[name] = Field(name, shape, start, description)
        start += out[name].size
    return out


# The roles of named_pos's rows, named as the Instruction fields that fill them: the object the
# instruction moves, its move_near target, its drawer.
NAMED = ("obj", "target", "drawer")

FIELDS: dict[str, Field] = _fields(
    [
        ("gripper_pos", (3,), "point between the fingertips, world frame (m)"),
        ("finger_opening", (1,), "gap between the finger pads (m): ~0.098 open, ~0 closed"),
        ("drawer_pos", (len(DRAWERS),), f"slide joint of the {', '.join(DRAWERS)} drawer (m, 0 = closed)"),
        ("handle_pos", (len(DRAWERS), 3), "world position of each drawer's knob, same drawer order (m)"),
        ("object_pos", (len(OBJECTS), 3), f"world position of each object (m): {', '.join(OBJECTS)}"),
        ("named_pos", (len(NAMED), 3), "world position of what the instruction names, in the order "
         f"{', '.join(NAMED)}: the object it moves, the object to move it near (move_near), the knob of "
         "the drawer it names; zeros for what it does not name (m)"),
    ]
)
STATE_DIM = sum(f.size for f in FIELDS.values())
DRAWER_INDEX = {name: i for i, name in enumerate(DRAWERS)}
OBJECT_INDEX = {name: i for i, name in enumerate(OBJECTS)}


def get(state: np.ndarray, name: str) -> np.ndarray:
    """Field ``name`` of ``state``, reshaped to the field's shape (batch dims kept)."""
    field = FIELDS[name]
    state = np.asarray(state)
    return state[..., field.slice].reshape(state.shape[:-1] + field.shape)


def gripper_pos(state: np.ndarray) -> np.ndarray:
    return get(state, "gripper_pos")


def finger_opening(state: np.ndarray) -> np.ndarray:
    return get(state, "finger_opening")[..., 0]


def drawer_pos(state: np.ndarray, drawer: str) -> np.ndarray:
    return get(state, "drawer_pos")[..., DRAWER_INDEX[drawer]]


def handle_pos(state: np.ndarray, drawer: str) -> np.ndarray:
    return get(state, "handle_pos")[..., DRAWER_INDEX[drawer], :]


def object_pos(state: np.ndarray, obj: str) -> np.ndarray:
    return get(state, "object_pos")[..., OBJECT_INDEX[obj], :]


def named_pos(state: np.ndarray, role: str) -> np.ndarray:
    """The position of what the instruction names in ``role`` (one of NAMED)."""
    return get(state, "named_pos")[..., NAMED.index(role), :]


def observation_table() -> str:
    """The state fields as a markdown table (the observation table of ManipulationEnv's docstring)."""
    rows = ["| Index | Field | Shape | Holds |", "|---|---|---|---|"]
    rows += [f"| {f.start}:{f.start + f.size} | {f.name} | {f.shape} | {f.description} |" for f in FIELDS.values()]
    return "\n".join(rows)


def describe() -> str:
    """A human-readable table of the layout (for docs and `qtbench env list`)."""
    return "\n".join(
        f"{f.name:<15} [{f.start:>2}:{f.start + f.size:<2}] shape {f.shape}" for f in FIELDS.values()
    )
