"""The API server's command line: granian serving the app factory with uvloop."""

from __future__ import annotations

import sys

from kit.settings import Settings

__all__ = ["APP_FACTORY", "server_command"]

APP_FACTORY = "peak.app:create_app"


def server_command(settings: Settings, factory: str = APP_FACTORY) -> list[str]:
    """granian's argv for ``factory`` (a ``module:function`` that returns the ASGI app)."""
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", factory,
        "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
        "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--backlog", "4096",
    ]  # fmt: skip
