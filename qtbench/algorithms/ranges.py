"""Valid values of algorithm config fields, declared once next to each field.

A config field declares its range with :func:`ranged` instead of a bare default::

    history: int = ranged(4, at_least=1)  # observation window length

``AlgoConfig`` checks every declared range when a config is built, so a bad ``--set``
stops the run with one message naming the field, the value and the valid range before
anything is written. A subclass that only changes a field's default
(``history: int = 10``) keeps the range declared by the class it inherits the field from.

A field added after configs were first stored declares, with :func:`added`, the value that
reproduces how a config stored without it ran (``relative_positions: bool = added(True,
before=False)``); :func:`completed` fills those values into a stored config, so reproducing,
evaluating or resuming an old run rebuilds the model it trained, not today's default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from qtbench.errors import QtbenchError

_KEY = "valid"  # the key of a field's Range in dataclasses.Field.metadata
_BEFORE = "before"  # the key of an added field's value before it existed


@dataclass(frozen=True)
class Range:
    """The values one field accepts; None bounds are open. Numbers must also be finite."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    one_of: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # a callable is read lazily
    divides: str | None = None  # the name of another field this value must divide
    each_one_of: Callable[[], tuple[Any, ...]] | None = None  # a tuple field: every item one of (lazy)

    def choices(self) -> tuple[Any, ...] | None:
        return self.one_of() if callable(self.one_of) else self.one_of

    def describe(self, config: Any) -> str:
        """The range in words, e.g. ``in [0, 1)``, ``>= 1 and a divisor of d_model (128)``."""
        choices = self.choices()
        if choices is not None:
            return "one of " + ", ".join(map(str, choices))
        if self.each_one_of is not None:
            return "a list of " + ", ".join(map(str, self.each_one_of()))
        low = (f"[{_num(self.at_least)}" if self.at_least is not None
               else f"({_num(self.above)}" if self.above is not None else None)
        high = (f"{_num(self.at_most)}]" if self.at_most is not None
                else f"{_num(self.below)})" if self.below is not None else None)
        if low and high:
            words = [f"in {low}, {high}"]
        elif low:
            words = [(">= " if low[0] == "[" else "> ") + low[1:]]
        elif high:
            words = [("<= " if high[-1] == "]" else "< ") + high[:-1]]
        else:
            words = ["finite"]
        if self.divides:
            words.append(f"a divisor of {self.divides} ({getattr(config, self.divides)})")
        return " and ".join(words)

    def accepts(self, value: Any, config: Any) -> bool:
        choices = self.choices()
        if choices is not None:
            return value in choices
        if self.each_one_of is not None:
            return isinstance(value, (tuple, list)) and set(value) <= set(self.each_one_of())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        inside = ((self.at_least is None or value >= self.at_least)
                  and (self.above is None or value > self.above)
                  and (self.at_most is None or value <= self.at_most)
                  and (self.below is None or value < self.below))
        if inside and self.divides:
            other = getattr(config, self.divides)
            return isinstance(other, int) and value != 0 and other % value == 0
        return inside


def _num(x: float) -> str:
    return f"{x:g}"


def ranged(default: Any, **valid: Any) -> Any:
    """A dataclass field with ``default`` whose values must lie in ``Range(**valid)``."""
    return dataclasses.field(default=default, metadata={_KEY: Range(**valid)})


def added(default: Any, before: Any, **valid: Any) -> Any:
    """A dataclass field with ``default``, added after configs were first stored: a stored config
    without it ran as ``before``. With ``valid``, its values must also lie in ``Range(**valid)``."""
    metadata = {_BEFORE: before, **({_KEY: Range(**valid)} if valid else {})}
    return dataclasses.field(default=default, metadata=metadata)


_UNDECLARED = object()


def _declared(config_class: type, name: str, key: str) -> Any:
    """Field ``name``'s metadata ``key``, from the config class or the nearest base class
    declaring it (``_UNDECLARED`` when none does)."""
    for cls in config_class.__mro__:
        declared = getattr(cls, "__dataclass_fields__", {}).get(name)
        if declared is not None and key in declared.metadata:
            return declared.metadata[key]
    return _UNDECLARED


def range_of(config_class: type, name: str) -> Range | None:
    """The Range declared for field ``name``, by the config class or the nearest base class."""
    valid = _declared(config_class, name, _KEY)
    return None if valid is _UNDECLARED else valid


def completed(config_class: type, stored: dict[str, Any]) -> dict[str, Any]:
    """A config dict stored by an earlier version, with each field it lacks that was
    :func:`added` since at the value that version ran with (in JSON form); a missing field
    declared otherwise stays missing."""
    out = dict(stored)
    for f in dataclasses.fields(config_class):
        before = _declared(config_class, f.name, _BEFORE)
        if f.name not in out and before is not _UNDECLARED:
            out[f.name] = json.loads(json.dumps(before))
    return out


def differing_fields(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The fields, sorted, whose values differ between two stored configs (a field one lacks
    counts as None there): what a resume or a dataset check names when it refuses."""
    return sorted(key for key in set(have) | set(want) if have.get(key) != want.get(key))


def check_ranges(config: Any) -> None:
    """QtbenchError naming every field of ``config`` outside its declared range."""
    problems, defaults = [], []
    for f in dataclasses.fields(config):
        valid = range_of(type(config), f.name)
        value = getattr(config, f.name)
        if valid is not None and not valid.accepts(value, config):
            problems.append(f"{f.name}={value!r} is out of range: {f.name} must be {valid.describe(config)}")
            defaults.append(f"{f.name}={f.default!r}")
    if problems:
        raise QtbenchError(
            f"{type(config).__name__}: " + "; ".join(problems),
            f"set a value in range with --set FIELD=VALUE (defaults: {', '.join(defaults)})",
        )
