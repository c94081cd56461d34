"""Test helpers: run an app's lifespan in-process and talk to it over httpx, or start real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def lifespan_client(
    app: ASGIApp, *, base_url: str = "http://peak.test", state: dict[str, Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, as an httpx client. Requests see the lifespan state like under granian;
    ``state``, when given, is filled with it (peak.app's lifespan puts its context there as ``"ctx"``)."""
    state = {} if state is None else state
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()
    failure: list[str] = []

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            failure.append(message.get("message", ""))
            started.set()
        elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            stopped.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()
    if failure:
        await task
        raise RuntimeError(f"lifespan startup failed: {failure[0]}")

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state, client=("10.1.2.3", 4321))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60) as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(stopped.wait(), 30)
        await task


async def retried_on_503(
    send: Callable[[], Awaitable[httpx.Response]], *, tries: int = 5, pause_s: float = 0.0
) -> httpx.Response:
    """``send()`` again while it answers 503 (which tells the caller to try again), at most ``tries`` times in
    all: what a shopper or a payment provider does. The last answer, whatever it is."""
    answer = await send()
    for _ in range(tries - 1):
        if answer.status_code != 503:
            break
        await asyncio.sleep(pause_s)
        answer = await send()
    return answer


def run_peak(*args: str, env: Mapping[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peak", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        check=False,
    )


def start_peak(*args: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "peak", *args],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )


def wait_http(url: str, *, status: int = 200, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2).status_code
            if last == status:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s} s (last: {last})")


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(30)


def sessions_started_by(pid: int) -> set[int]:
    """Session ids of the direct children of ``pid``: each server `peak up` starts runs in a session of its own."""
    sessions = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                sessions.add(int(fields[3]))
    return sessions


def alive_in(sessions: set[int]) -> list[str]:
    """Processes (not zombies) still running in these sessions, with their command lines."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(fields[3]) in sessions and fields[0] != "Z":
                alive.append(f"{entry}: {cmd}")
    return alive


def up_env(data_dir: Path, port: int, *, workers: int) -> dict[str, str]:
    """Environment for a `peak up` that starts its own servers under ``data_dir`` and serves on ``port``."""
    return {
        "PEAK_DATA_DIR": str(data_dir),
        "PEAK_PORT": str(port),
        "PEAK_WORKERS": str(workers),
        "PEAK_REDIS_URL": "",
        "PEAK_DATABASE_URL": "",
        "PEAK_SECRET_KEY": "",
    }
