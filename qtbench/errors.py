"""One error type for every user-facing failure, so the CLI can print it and exit 2."""

from __future__ import annotations


class QtbenchError(Exception):
    """A problem the user can fix: says what is wrong and how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}\n  fix: {self.fix}"


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> QtbenchError:
    """The error for a name that is not one of the valid choices (task, algo, instruction...)."""
    return QtbenchError(
        f"unknown {kind} {name!r}",
        f"use one of: {', '.join(sorted(valid))}",
    )
