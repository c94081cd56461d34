"""CPU per request of app variants measured inside one process, through ASGI with no network in between.

On a shared machine two wrk runs of the same server a few seconds apart differ by up to 20 %, far more than a
middleware costs. Driving the apps directly from this process and reading this process's CPU time, in short
chunks that alternate between the variants, resolves a tenth of a microsecond. What the server (granian) and
the kernel spend on a request is the same for every variant, so it drops out of the difference.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import uvloop
from starlette.types import ASGIApp, Message

__all__ = ["cpu_per_request"]

_CONCURRENCY = 32


async def _lifespan(app: ASGIApp) -> tuple[dict[str, Any], asyncio.Queue[Message], asyncio.Task[None]]:
    """Start an app's lifespan; returns its state, the queue to send the shutdown on, and the running task."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    state: dict[str, Any] = {}

    async def send(message: Message) -> None:
        if message["type"].startswith("lifespan.startup") and not started.done():
            started.set_result(message)

    async def run() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, inbox.get, send)

    task = asyncio.create_task(run())
    await inbox.put({"type": "lifespan.startup"})
    answer = await started
    if answer["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {answer.get('message', answer['type'])}")
    return state, inbox, task


async def _get(app: ASGIApp, state: dict[str, Any], path: str) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": dict(state),
    }  # fmt: skip
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _chunk(
    app: ASGIApp, state: dict[str, Any], path: str, requests: int, finish: Callable[[], None] = lambda: None
) -> float:
    """CPU seconds of this process per request, for ``requests`` GETs sent ``_CONCURRENCY`` at a time, and
    ``finish()`` (what the requests left to a thread) inside the measured time."""
    each = max(1, requests // _CONCURRENCY)

    async def client() -> None:
        for _ in range(each):
            status = await _get(app, state, path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status} in-process")

    start = time.process_time()
    await asyncio.gather(*(client() for _ in range(_CONCURRENCY)))
    finish()
    return (time.process_time() - start) / (each * _CONCURRENCY)


async def _compare(apps: Mapping[str, ASGIApp], path: str, requests: int, chunks: int) -> dict[str, float]:
    started = {name: await _lifespan(app) for name, app in apps.items()}
    try:
        names = list(apps)
        for name in names:  # warm-up, not counted
            await _chunk(apps[name], started[name][0], path, requests)
        seen: dict[str, list[float]] = {name: [] for name in names}
        for turn in range(chunks):
            for name in names if turn % 2 == 0 else names[::-1]:
                seen[name].append(await _chunk(apps[name], started[name][0], path, requests))
        return {name: statistics.median(cpu) * 1e6 for name, cpu in seen.items()}
    finally:
        for _, inbox, task in started.values():
            await inbox.put({"type": "lifespan.shutdown"})
            await task


async def _toggle(
    app: ASGIApp,
    toggles: Mapping[str, Callable[[], None]],
    finish: Callable[[], None],
    path: str,
    requests: int,
    chunks: int,
) -> dict[str, float]:
    state, inbox, task = await _lifespan(app)
    try:
        names = list(toggles)
        for name in names:  # warm-up, not counted
            toggles[name]()
            await _chunk(app, state, path, requests, finish)
        seen: dict[str, list[float]] = {name: [] for name in names}
        for turn in range(chunks):
            for name in names if turn % 2 == 0 else names[::-1]:
                toggles[name]()
                seen[name].append(await _chunk(app, state, path, requests, finish))
        return {name: statistics.median(cpu) * 1e6 for name, cpu in seen.items()}
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


def cpu_per_toggle(
    app: ASGIApp,
    toggles: Mapping[str, Callable[[], None]],
    *,
    finish: Callable[[], None],
    path: str = "/healthz",
    requests: int = 20_000,
    chunks: int = 6,
) -> dict[str, float]:
    """Like ``cpu_per_request`` for one app whose variants are switched in-process (``toggles``, each called
    before its chunks); ``finish`` runs inside every chunk's measured time (work a variant leaves to a
    thread, so that the next chunk is not charged with it)."""
    return uvloop.run(_toggle(app, toggles, finish, path, requests, chunks))


def cpu_per_request(
    apps: Mapping[str, ASGIApp], path: str = "/healthz", *, requests: int = 20_000, chunks: int = 6
) -> dict[str, float]:
    """Median microseconds of CPU per GET ``path`` for each app, over ``chunks`` alternating chunks of
    ``requests`` each (after one warm-up chunk each)."""
    return uvloop.run(_compare(apps, path, requests, chunks))
