"""reviews subsystem (non-core)."""

from __future__ import annotations

from peak.component import Component

__all__ = ["component"]


def component() -> Component:
    return Component(name="reviews")
