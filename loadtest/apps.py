"""App variants `peak bench` compares with the real one."""

from __future__ import annotations

import dataclasses

from starlette.applications import Starlette

from kit.settings import Settings
from loadtest import naive
from peak.app import components, create_app

__all__ = ["BASELINE_FACTORY", "baseline_app", "without_degrade_middleware"]

# granian's --factory target for the bench's private stacks.
BASELINE_FACTORY = "loadtest.apps:baseline_app"


def baseline_app() -> Starlette:
    """The whole app plus the naive row-lock purchase the bench compares purchases with (loadtest/naive.py)."""
    return create_app(parts=[*components(), naive.component()])


def without_degrade_middleware(settings: Settings | None = None) -> Starlette:
    """The whole app minus the degradation middleware: what its cost on every request is measured against."""
    parts = [dataclasses.replace(part, middleware=()) for part in components()]
    return create_app(settings, parts=parts)
