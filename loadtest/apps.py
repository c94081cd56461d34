"""App variants `peak bench` compares with the real one."""

from __future__ import annotations

import dataclasses

from starlette.applications import Starlette

from kit.settings import Settings
from peak.app import components, create_app

__all__ = ["without_degrade_middleware"]


def without_degrade_middleware(settings: Settings | None = None) -> Starlette:
    """The whole app minus the degradation middleware: what its cost on every request is measured against."""
    parts = [dataclasses.replace(part, middleware=()) for part in components()]
    return create_app(settings, parts=parts)
