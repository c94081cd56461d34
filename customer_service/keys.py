"""Redis keys of customer_service."""

from __future__ import annotations

__all__ = ["INBOX", "INBOX_GROUP"]

# Stream of messages accepted while customer_service is shed; the worker moves them into PostgreSQL.
INBOX = "{cs}:inbox"
INBOX_GROUP = "cs-writers"
