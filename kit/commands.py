"""What every `peak` subcommand shares: settings (with the running local stack's URLs), a context, errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kit.component import Component, sections_of
from kit.context import Context, open_context
from kit.params import ascii_int
from kit.settings import Settings

__all__ = [
    "CommandError",
    "cli_context",
    "fail",
    "load_settings",
    "require_servers",
    "run",
    "say",
    "sections_of",
    "whole_number",
]

T = TypeVar("T")


class CommandError(Exception):
    """A command cannot go on; the message says why and what to do next."""


def say(text: str) -> None:
    print(text, flush=True)


def load_settings(components: Sequence[Component] = ()) -> Settings:
    """Settings from the environment, every component's section checked; unset server URLs come from a
    running `peak up` (its ``env`` file)."""
    environ = dict(os.environ)
    env_file = Path(environ.get("PEAK_DATA_DIR") or ".peak") / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and not environ.get(key):
                environ[key] = value
    return Settings.from_env(environ, sections=sections_of(components))


def require_servers(settings: Settings) -> None:
    if settings.redis_url is None or settings.database_url is None:
        raise CommandError(
            "no Redis/PostgreSQL to talk to: start the stack with `peak up` in another terminal, "
            "or set PEAK_REDIS_URL and PEAK_DATABASE_URL"
        )


@contextlib.asynccontextmanager
async def cli_context(settings: Settings, components: Sequence[Component]) -> AsyncIterator[Context]:
    require_servers(settings)
    async with open_context(settings, components, "cli", start_services=False) as ctx:
        yield ctx


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(main())


def fail(text: str, code: int = 1) -> int:
    print(f"peak: {text}", file=sys.stderr, flush=True)
    return code


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for a count from ``low`` to ``high`` in ASCII digits."""

    def parse(raw: str) -> int:
        value = ascii_int(raw)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {raw!r}")
        return value

    return parse
