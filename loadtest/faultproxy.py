"""A TCP proxy that makes a network slow and unreliable on purpose, for fault tests and `peak drill`.

Put it between a client and a server (the API and Redis): every chunk is passed on ``latency_s`` later in each
direction (order kept, chunks in flight together, as a long link does), and with ``reset_rate`` a chunk the
client sends makes the proxy reset both connections (RST, no FIN) instead: half of those before the server
saw the request (the call never ran), half after it was passed on but before the reply comes back (the call
ran, its answer is lost). ``drop_replies`` does the latter to the next N requests exactly, for a test that
needs it once. ``stalled`` holds every reply back until it is cleared (a server that stopped answering). The
settings can change while it runs; ``counts`` says what it did. ``in_thread`` serves it on a loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "in_thread"]

_READ_SIZE = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER 0, then drop the connection without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    latency_s: float = 0.0
    reset_rate: float = 0.0
    stalled: bool = False
    # The next this many requests are passed on and their replies dropped with the connection (deterministic).
    drop_replies: int = 0
    # The next this many requests are reset whatever ``reset_rate`` (deterministic). Resets alternate: before
    # the request reaches the server, then after the server ran it, and so on.
    reset_first: int = 0
    seed: int | None = None
    # connections, requests (chunks read from clients), resets_before (request dropped), resets_after (reply
    # dropped), stalls
    counts: Counter[str] = field(default_factory=Counter)
    _server: asyncio.Server | None = None
    _random: random.Random = field(default_factory=random.Random)
    _links: set[asyncio.Task[None]] = field(default_factory=set)
    _resets: int = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._random.seed(self.seed)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def heal(self) -> None:
        """No latency, no resets, nothing stalled."""
        self.latency_s, self.reset_rate, self.stalled, self.drop_replies = 0.0, 0.0, False, 0
        self.reset_first = 0

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._link(client_r, client_w)
        except asyncio.CancelledError:
            pass  # the proxy is closing; asyncio's stream callback would log a cancelled link as an error
        finally:
            self._links.discard(task)

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            _reset(client_w)
            return
        to_server, to_client = _Delayed(server_w, self), _Delayed(client_w, self)
        # Set once a request was passed on whose reply is to be dropped, with the connection.
        doomed = asyncio.Event()

        async def requests() -> None:
            while data := await client_r.read(_READ_SIZE):
                self.counts["requests"] += 1
                if self.drop_replies > 0:
                    self.drop_replies -= 1
                    doomed.set()
                    to_server.put(data)
                    await asyncio.Event().wait()
                if self.reset_first > 0 or (self.reset_rate and self._random.random() < self.reset_rate):
                    self.reset_first = max(0, self.reset_first - 1)
                    self._resets += 1
                    if self._resets % 2:
                        self.counts["resets_before"] += 1
                        return
                    doomed.set()
                    to_server.put(data)
                    await asyncio.Event().wait()  # the reply decides when this link ends
                to_server.put(data)

        async def replies() -> None:
            while data := await server_r.read(_READ_SIZE):
                if doomed.is_set():
                    # The server ran the call (this is its reply): the client never hears of it.
                    self.counts["resets_after"] += 1
                    return
                while self.stalled:
                    self.counts["stalls"] += 1
                    await asyncio.sleep(0.05)
                to_client.put(data)

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(replies())]
        try:
            with contextlib.suppress(OSError):
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*pumps, to_server.task, to_client.task]:
                task.cancel()
            await asyncio.gather(*pumps, to_server.task, to_client.task, return_exceptions=True)
            _reset(client_w)
            _reset(server_w)


class _Delayed:
    """One direction of a link: chunks written ``latency_s`` after they were read, in order."""

    def __init__(self, writer: asyncio.StreamWriter, proxy: FaultProxy) -> None:
        self._writer = writer
        self._proxy = proxy
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    def put(self, data: bytes) -> None:
        self._queue.put_nowait((time.monotonic() + self._proxy.latency_s, data))

    async def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = await self._queue.get()
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                self._writer.write(data)
                await self._writer.drain()


@contextlib.asynccontextmanager
async def in_thread(proxy: FaultProxy) -> AsyncIterator[FaultProxy]:
    """``proxy`` served on an event loop of its own, in a thread: in a process that also generates load (many
    requests on its own loop) the latency stays what was asked for instead of growing with that load. Its
    settings are plain attributes, changed from here as usual."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(proxy.start())
        except BaseException as exc:  # the caller hears of it
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(proxy.close())
        loop.close()

    thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait)
    if failure:
        raise failure[0]
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 30)
