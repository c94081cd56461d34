"""The dev stack's one error: a server or tool could not start, and the message says what to do."""

from __future__ import annotations

from kit.commands import CommandError

__all__ = ["StackError"]


class StackError(CommandError):
    """A server could not start; the message says what to do (`peak` prints it as any command's error)."""
