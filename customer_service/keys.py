"""Redis keys of customer_service; one hash tag, so each script's keys share a slot on a cluster."""

from __future__ import annotations

__all__ = ["DEAD_LETTERS", "INBOX", "INBOX_GROUP", "rate"]

_TAG = "{cs}"

# Stream of messages accepted while customer_service is shed; the worker moves them into PostgreSQL.
INBOX = f"{_TAG}:inbox"
INBOX_GROUP = "cs-writers"
# Stream of inbox entries PostgreSQL refused (or that could not be read), with ``_src`` (the inbox entry id)
# and ``_reason``; `peak cs dead-letters` lists, retries and drops them.
DEAD_LETTERS = f"{_TAG}:inbox:dead"


def rate(user_id: str) -> str:
    """Counter of the messages a shopper sent in the current window (expires with it)."""
    return f"{_TAG}:rate:{user_id}"
