"""Console fixtures: the whole app in-process with its context, admins signed in by cookie, and a driver that
reads a live event stream straight from the ASGI app (httpx's ASGI transport waits for a whole body)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Message

from kit.context import Context
from kit.settings import Settings
from peak.app import components, create_app
from sso.accounts import Accounts
from sso.service import Sso
from tests.seckill.conftest import own_postgres
from tests.support import lifespan_client

__all__ = ["own_postgres"]

PASSWORD = "console-password-0123"
ADMIN_TOKEN = "console-admin-token-0123456789"
# What the browser sends with a change from the console's own page (the public URL under the test settings).
SITE = "http://127.0.0.1:8000"


@dataclass
class App:
    http: httpx.AsyncClient
    ctx: Context
    asgi: ASGIApp


@contextlib.asynccontextmanager
async def console_app(settings: Settings) -> AsyncIterator[App]:
    state: dict[str, Any] = {}
    async with lifespan_client(create_app(settings, components()), state=state) as http:
        transport = http._transport
        assert isinstance(transport, httpx.ASGITransport)
        yield App(http, state["ctx"], transport.app)


@pytest.fixture
def console_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(PEAK_ADMIN_TOKEN=ADMIN_TOKEN)


@pytest.fixture
async def app(console_settings: Settings) -> AsyncIterator[App]:
    async with console_app(console_settings) as a:
        yield a


async def user(app: App, name: str, *, admin: bool) -> str:
    """A new account (an admin or not), signed in: its ``peak_sid`` cookie value."""
    created = await app.http.post("/sso/users", json={"username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    if admin:
        account = await Accounts(app.ctx.db).set_role(name, "admin", granted=True)
        assert account is not None
        await app.ctx.get(Sso).sessions.change_roles(account.id, account.roles)
    login = await app.http.post("/sso/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    cookie = login.cookies.get("peak_sid")
    app.http.cookies.clear()
    assert cookie
    return cookie


@dataclass
class Stream:
    """An event stream read from the app; ``close()`` is the client going away."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, Any]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    ended: bool = False
    raw_chunks: int = 0
    comments: list[str] = field(default_factory=list)
    first: bytes = b""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self.raw += chunk
        while b"\n\n" in self.raw:
            block, _, rest = bytes(self.raw).partition(b"\n\n")
            self.raw = bytearray(rest)
            self.first = self.first or block
            if block.startswith(b":"):
                self.comments.append(block.decode())
            kind, data = "message", b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data += line[6:]
            if data:
                self.events.append((kind, orjson.loads(data)))
        self.changed.set()

    async def next(self, kind: str, *, after: int = 0, timeout_s: float = 5.0) -> tuple[int, Any]:
        """The index and data of the first ``kind`` event at index ``after`` or later."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i in range(after, len(self.events)):
                    if self.events[i][0] == kind:
                        return i, self.events[i][1]
                if self.ended:
                    raise AssertionError(f"the stream ended without a {kind} event: {self.events}")
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.gone.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


async def open_stream(
    app: App, headers: dict[str, str], path: str = "/console/api/stream", *, stalled: bool = False
) -> Stream:
    """Starts a GET of ``path`` on the ASGI app and returns once its answer started; a ``stalled`` client
    reads nothing after the first chunk (its sends block until it goes away)."""
    stream = Stream()
    started = asyncio.Event()
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": unquote(path), "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"peak.test"), *raw_headers], "client": ("10.1.2.3", 4321),
        "server": ("peak.test", 80),
    }  # fmt: skip
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await stream.gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            stream.status = message["status"]
            stream.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            started.set()
        elif message["type"] == "http.response.body":
            if stalled and stream.raw_chunks:
                await stream.gone.wait()
                raise OSError("the client is gone")
            stream.raw_chunks += 1
            stream.feed(message.get("body", b""))
            if not message.get("more_body", False):
                stream.ended = True
                stream.changed.set()

    async def run() -> None:
        try:
            await app.asgi(scope, receive, send)
        finally:
            stream.ended = True
            stream.changed.set()
            started.set()

    stream.task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), 10)
    return stream


async def raw_get(app: App, path: str) -> Stream:
    """A GET of ``path`` exactly as given (no client normalises its dots), the whole answer read."""
    answer = await open_stream(app, {}, path)
    assert answer.task is not None
    await asyncio.wait_for(answer.task, 10)
    return answer


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"peak_sid={value}"}
