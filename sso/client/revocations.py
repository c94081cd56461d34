"""The ended sessions and revoked tokens a process knows of, learnt from SSO's changes channel at once and from
the revocation journal (polled) in case a message was lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kit.redis import RedisClient, create_pubsub_client
from sso import keys

__all__ = ["Revocations"]

log = logging.getLogger("peak.sso")


class Revocations:
    """``ended_sessions`` and ``revoked_tokens`` map ids to when they can be forgotten (no token outlives
    that). The channel's other messages ("k" keys changed, "c" clients changed) go to ``on_change``."""

    def __init__(
        self,
        redis: RedisClient | None,
        redis_url: str | None,
        *,
        poll_interval_s: float,
        on_change: Callable[[str], Awaitable[None]],
    ) -> None:
        # Never rebound, only changed in place: the validator keeps these very dicts for its hot path.
        self.ended_sessions: dict[str, float] = {}
        self.revoked_tokens: dict[str, float] = {}
        self._redis = redis
        self._redis_url = redis_url
        self._poll_interval_s = poll_interval_s
        self._on_change = on_change
        self._journal_seen_ms = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._subscribed = asyncio.Event()

    def forget(self, message: str) -> None:
        """Apply a revocation message: ``s:<session id>`` or ``j:<token id>``."""
        kind, _, value = message.partition(":")
        until = time.time() + keys.REVOKED_JOURNAL_KEEP_S
        if kind == "s" and value:
            self.ended_sessions[value] = until
        elif kind == "j" and value:
            self.revoked_tokens[value] = until

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        """Read the journal back as far as a token lives, then follow the channel and the journal (with
        Redis) until the block ends."""
        if self._redis is not None:
            self._journal_seen_ms = (time.time() - keys.REVOKED_JOURNAL_KEEP_S) * 1000
            await self._poll_journal()
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="sso-journal"))
            if self._redis_url is not None:
                self._tasks.append(asyncio.create_task(self._listen_forever(), name="sso-changes"))
                # Messages published before the subscription is in place would be lost to this process.
                try:
                    await asyncio.wait_for(self._subscribed.wait(), 5)
                except TimeoutError:
                    log.warning("not yet subscribed to %s; going on", keys.CHANGES_CHANNEL)
        try:
            yield
        finally:
            # redis-py's get_message can swallow a cancellation; the listener also checks this flag.
            self._stopping = True
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5)
            self._tasks.clear()
            self._stopping = False

    async def _handle(self, message: str) -> None:
        if message in ("k", "c"):
            await self._on_change(message)
        else:
            self.forget(message)

    async def _listen_forever(self) -> None:
        assert self._redis_url is not None
        while not self._stopping:
            client = create_pubsub_client(self._redis_url)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.CHANGES_CHANNEL)
                    if self._subscribed.is_set():  # back after a loss: catch up on keys and clients
                        await self._handle("k")
                        await self._handle("c")
                    self._subscribed.set()
                    while not self._stopping:
                        message = await pubsub.get_message(timeout=0.2)
                        if message is not None and message["type"] == "message":
                            await self._handle(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The journal poll covers what was missed while disconnected.
                log.warning("revocation channel lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self._poll_journal()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read the revocation journal: %s", exc)

    async def _poll_journal(self) -> None:
        assert self._redis is not None
        entries: Any = await self._redis.zrangebyscore(
            keys.REVOKED_JOURNAL, f"({self._journal_seen_ms}", "+inf", withscores=True
        )
        for member, score in entries:
            self._journal_seen_ms = max(self._journal_seen_ms, float(score))
            self.forget(str(member))
        now = time.time()
        for table in (self.ended_sessions, self.revoked_tokens):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
