"""Redis keys of reviews."""

from __future__ import annotations

__all__ = ["summary"]


def summary(sku: str) -> str:
    """JSON of the first page and the average, served (marked stale) while reviews is shed."""
    return f"reviews:{{{sku}}}:summary"
