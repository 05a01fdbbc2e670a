"""The base class of errors a user can cause and fix; the CLI prints them as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class UserError(Exception):
    """Raised with a message that says what went wrong and how to fix it."""


def validation_reason(exc: ValidationError, limit: int = 3) -> str:
    """A pydantic validation error as one line: where each of the first ``limit`` problems is and
    what is wrong, for dead-letter headers and clarification requests alike. Locations can hold
    keys from hostile input, so each step is kept short and printable."""
    from nm_toolkit.schemas import brief

    def step(part: str | int) -> str:
        text = str(part)
        return text if len(text) <= 64 and text.isprintable() else brief(text, 64)

    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(map(step, err["loc"])) or "record"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
