"""The ended sessions, revoked tokens and changed accounts a process knows of, learnt from SSO's changes channel
at once and from the revocation journals (one per shard of users, polled) in case a message was lost; or, for a
process without Redis, from peak's HTTP feed (``sso.client.feed``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kit.redis import PubSubSource, RedisClient
from sso import keys
from sso.client.feed import RevocationFeed

__all__ = ["Revocations"]

log = logging.getLogger("peak.sso")


class Revocations:
    """``ended_sessions`` and ``revoked_tokens`` map ids to when they can be forgotten (no token outlives
    that); ``changed_accounts`` maps user ids to (the account's version, when to forget it): their tokens
    issued at an older version no longer count. The channel's other messages ("k" keys changed, "c" clients
    changed) go to ``on_change``."""

    def __init__(
        self,
        redis: RedisClient | None,
        redis_url: str | None,
        *,
        poll_interval_s: float,
        on_change: Callable[[str], Awaitable[None]],
        feed: RevocationFeed | None = None,
    ) -> None:
        # Never rebound, only changed in place: the validator keeps these very dicts for its hot path.
        self.ended_sessions: dict[str, float] = {}
        self.revoked_tokens: dict[str, float] = {}
        self.changed_accounts: dict[str, tuple[int, float]] = {}
        self._redis = redis
        self._redis_url = redis_url
        self._poll_interval_s = poll_interval_s
        self._on_change = on_change
        # The highest score read from each shard's journal (the Redis clock of that shard's primary, ms).
        self._journal_seen_ms = [0.0] * keys.SHARDS
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._subscribed = asyncio.Event()
        self._feed = feed
        # Called (without arguments, on the loop) when something may have been revoked: the feed's long polls.
        self._revoked_listeners: list[Callable[[], None]] = []

    def on_revoked(self, listener: Callable[[], None], *, remove: bool = False) -> None:
        """Call ``listener()`` whenever a revocation is announced or found in the journal."""
        if remove:
            if listener in self._revoked_listeners:
                self._revoked_listeners.remove(listener)
        else:
            self._revoked_listeners.append(listener)

    def _tell_revoked(self) -> None:
        for listener in self._revoked_listeners:
            listener()

    def forget(self, message: str) -> None:
        """Apply one revocation: ``s:<session id>``, ``j:<token id>`` or ``u:<user id>:<account version>``."""
        kind, _, value = message.partition(":")
        until = time.time() + keys.REVOKED_JOURNAL_KEEP_S
        if kind == "s" and value:
            self.ended_sessions[value] = until
        elif kind == "j" and value:
            self.revoked_tokens[value] = until
        elif kind == "u":
            user_id, _, version = value.rpartition(":")
            if user_id and version.isdigit():
                known = self.changed_accounts.get(user_id)
                if known is None or known[0] < int(version):
                    self.changed_accounts[user_id] = (int(version), until)

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        """Read the journal back as far as a token lives, then follow the channel and the journal (with
        Redis, or the HTTP feed) until the block ends."""
        if self._feed is not None:
            self._tasks.append(asyncio.create_task(self._follow_feed(self._feed), name="sso-feed"))
            try:  # as with the journal: what was revoked before this process started counts from the start
                await asyncio.wait_for(self._feed.caught_up.wait(), 5)
            except TimeoutError:
                log.warning("could not read the revocation feed %s yet; going on", self._feed.url)
        if self._redis is not None:
            self._journal_seen_ms = [0.0] * keys.SHARDS
            try:
                await self._poll_journal()
            except Exception as exc:  # Redis may come up later; the poll goes on trying
                log.warning("could not read the revocation journal yet: %s", exc)
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

    async def _follow_feed(self, feed: RevocationFeed) -> None:
        async def gap() -> None:
            await self._on_change("gap")

        def on_gap() -> None:
            self._tasks.append(asyncio.create_task(gap()))

        def apply(words: list[str]) -> None:
            for word in words:
                self.forget(word)
            self._prune()

        await feed.follow(apply, on_gap)

    async def _handle(self, message: str) -> None:
        revoked = False
        for word in message.split():
            if word in ("k", "c"):
                await self._on_change(word)
            else:
                self.forget(word)
                revoked = True
        if revoked:
            self._tell_revoked()

    async def _listen_forever(self) -> None:
        assert self._redis_url is not None
        source = PubSubSource(self._redis_url)
        while not self._stopping:
            client = source.client()
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.CHANGES_CHANNEL)
                    await source.learn(client)
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
                source.failed()
                log.warning("revocation channel lost (%s); reconnecting to %s", exc, source.address)
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()

    async def _poll_forever(self) -> None:
        # The flag as well as the cancellation: redis-py can swallow a cancellation in the middle of a call.
        while not self._stopping:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self._poll_journal()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read the revocation journal: %s", exc)

    async def _poll_journal(self) -> None:
        """One read of every shard's journal (a pipeline: one round trip per primary). Entries are read from
        the last score seen, inclusive, so one written later in that same millisecond is not missed (reading
        one again changes nothing); none older than a token lives."""
        assert self._redis is not None
        floor_ms = (time.time() - keys.REVOKED_JOURNAL_KEEP_S) * 1000
        pipe: Any = self._redis.pipeline(transaction=False)
        for journal, seen_ms in zip(keys.JOURNALS, self._journal_seen_ms, strict=True):
            pipe.zrangebyscore(journal, max(seen_ms, floor_ms), "+inf", withscores=True)
        replies: list[Any] = await pipe.execute()
        news = False
        for shard, entries in enumerate(replies):
            for member, score in entries:
                news = news or float(score) > self._journal_seen_ms[shard]
                self._journal_seen_ms[shard] = max(self._journal_seen_ms[shard], float(score))
                self.forget(str(member))
        if news:
            self._tell_revoked()
        self._prune()

    def _prune(self) -> None:
        now = time.time()
        for table in (self.ended_sessions, self.revoked_tokens):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
        for user_id in [u for u, (_, until) in self.changed_accounts.items() if until <= now]:
            del self.changed_accounts[user_id]
