"""degrade subsystem."""

from __future__ import annotations

from peak.component import Component

__all__ = ["component"]


def component() -> Component:
    return Component(name="degrade")
