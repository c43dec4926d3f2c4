"""The errors a user can cause. Every door turns them into a clear message, never a traceback."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, where it is, and how to fix it.

    ``path`` is a JSON pointer into the item's data (``/reviews/0/date``), or ``""``
    when the problem concerns the whole item.
    """

    path: str
    message: str
    advice: str = ""
    rule: str = ""
    severity: str = "error"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        tail = f" ({self.advice})" if self.advice else ""
        return f"{where}{self.message}{tail}"


class TrackerError(Exception):
    """Base class for every error the engine raises on purpose."""

    #: HTTP-like status the web and API doors map the error onto.
    status = 400

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def __str__(self) -> str:
        return f"{self.message} {self.advice}".strip() if self.advice else self.message


class ValidationFailed(TrackerError):
    """The change was refused; ``problems`` lists each reason with its field and advice."""

    status = 422

    def __init__(self, problems: list[Problem], message: str = "") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(message or f"Nothing was saved: {count} problem{'' if count == 1 else 's'} to fix.")

    def __str__(self) -> str:
        return self.message + " " + "; ".join(str(p) for p in self.problems)


class NotFound(TrackerError):
    status = 404


class PermissionDenied(TrackerError):
    status = 403


class Conflict(TrackerError):
    """Someone else changed the item first (a stale version), or a duplicate was refused."""

    status = 409


class DefinitionError(TrackerError):
    """A definition could not be loaded; raised only where one definition is asked for."""
