"""The revocation feed behind ``GET /sso/revocations``: the shard journals (``keys.JOURNALS``) read from a
cursor, for validators that cannot reach Redis.

A cursor names, per shard, the highest journal score (the Redis clock of the shard's primary, ms) answered
and how many entries carry that score: an entry written later in that same millisecond is still found (it makes
the count grow), and nothing answered is answered again unless its millisecond gained one. It also carries
when it was made (this process's clock): the journals drop entries after ``REVOKED_JOURNAL_KEEP_S``, so an
older cursor may have missed some and is refused (410 ``cursor_expired``), ``_SKEW_MS`` early for the clocks
of the process and of Redis not agreeing.

Long polls (``wait``) park on one event per process, set by the process's revocation listener (the token
validator's one subscription to the changes channel, and its journal poll as the safety net): nothing runs
for a waiting poll until something is revoked. Polls woken together with the same cursor share one read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kit.context import Context
from kit.errors import InvalidRequest
from kit.redis import RedisClient
from kit.stopping import on_stop
from sso import keys
from sso.client.revocations import Revocations
from sso.errors import CursorExpired

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CURSOR_CHARS",
    "MAX_LIMIT",
    "MAX_WAIT_S",
    "Cursor",
    "Feed",
    "Page",
    "serving",
]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_WAIT_S = 30
# 16 shards of "<13 digits>-<up to 6 digits>" and the issue time, base64: about 500 characters.
MAX_CURSOR_CHARS = 640
_SKEW_MS = 30_000
_KEEP_MS = keys.REVOKED_JOURNAL_KEEP_S * 1000
_VERSION = "1"
_MAX_MS = 2**53


@dataclass(frozen=True, slots=True)
class Cursor:
    issued_ms: int
    # Per shard: (the highest score answered, how many entries carry it).
    marks: tuple[tuple[int, int], ...]

    @classmethod
    def start(cls, now_ms: int) -> Cursor:
        """Everything the journals still keep."""
        return cls(now_ms, ((now_ms - _KEEP_MS, 0),) * keys.SHARDS)

    def encode(self) -> str:
        text = ".".join([_VERSION, str(self.issued_ms), *(f"{s}-{n}" for s, n in self.marks)])
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    @classmethod
    def decode(cls, raw: str, now_ms: int) -> Cursor:
        """The cursor of ``raw``; InvalidRequest for anything this feed did not make, CursorExpired when too
        old for the journals."""
        if not raw or len(raw) > MAX_CURSOR_CHARS:
            raise InvalidRequest("query parameter 'since' is not a cursor of this feed")
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
            version, issued, *rest = text.split(".")
            marks = tuple(_mark(word) for word in rest)
            issued_ms = _ms(issued)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidRequest("query parameter 'since' is not a cursor of this feed") from None
        if version != _VERSION or len(marks) != keys.SHARDS or issued_ms > now_ms + _SKEW_MS:
            raise InvalidRequest("query parameter 'since' is not a cursor of this feed")
        if issued_ms < now_ms - (_KEEP_MS - _SKEW_MS):
            raise CursorExpired()
        return cls(issued_ms, marks)


def _ms(word: str) -> int:
    if not (word.isascii() and word.isdigit()) or len(word) > 16 or int(word) > _MAX_MS:
        raise ValueError(word)
    return int(word)


def _mark(word: str) -> tuple[int, int]:
    score, sep, count = word.partition("-")
    if not sep or len(count) > 7:
        raise ValueError(word)
    return _ms(score), _ms(count)


@dataclass(frozen=True, slots=True)
class Page:
    sessions: list[tuple[str, int]]
    tokens: list[tuple[str, int]]
    accounts: list[tuple[str, int, int]]
    cursor: Cursor
    more: bool

    @property
    def empty(self) -> bool:
        return not (self.sessions or self.tokens or self.accounts)

    def body(self) -> dict[str, Any]:
        return {
            "revoked": [{"sid": sid, "at": at} for sid, at in self.sessions],
            "jti": [{"jti": jti, "at": at} for jti, at in self.tokens],
            "accounts": [{"sub": sub, "version": version, "at": at} for sub, version, at in self.accounts],
            "cursor": self.cursor.encode(),
            "more": self.more,
        }


class Feed:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._changed = asyncio.Event()
        self._reads: dict[tuple[tuple[tuple[int, int], ...], int], asyncio.Future[Page]] = {}
        self.stopping = False
        # Long polls parked right now.
        self.parked = 0

    def revoked(self) -> None:
        """Something was revoked (or the process stops): every parked poll reads again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def stop(self) -> None:
        self.stopping = True
        self.revoked()

    def news(self) -> asyncio.Event:
        """Set when something is revoked after this call (take it before reading)."""
        return self._changed

    async def read(self, cursor: Cursor, limit: int) -> Page:
        """The entries after ``cursor``, at most about ``limit`` (a millisecond's entries are never split)."""
        key = (cursor.marks, limit)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._read(cursor, limit))
            self._reads[key] = shared
            shared.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(shared)

    def _done(self, key: tuple[tuple[tuple[int, int], ...], int], done: asyncio.Future[Page]) -> None:
        self._reads.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every poll that shared the read has it raised (a 503), or none is left

    async def _read(self, cursor: Cursor, limit: int) -> Page:
        issued_ms = int(time.time() * 1000)
        pipe: Any = self._redis.pipeline(transaction=False)
        for journal, (score, seen) in zip(keys.JOURNALS, cursor.marks, strict=True):
            pipe.zrangebyscore(journal, score, "+inf", start=0, num=seen + limit + 1, withscores=True)
        replies: list[list[tuple[str, float]]] = await pipe.execute()
        groups_by_shard: list[list[list[tuple[str, int]]]] = []
        more = False
        for shard, reply in enumerate(replies):
            mark = cursor.marks[shard]
            cut = len(reply) >= mark[1] + limit + 1
            groups = _new_groups(reply, mark, cut=cut)
            if cut and not groups:
                # One millisecond holds more than a page (a logout of very many sessions): all of it.
                score = int(reply[-1][1])
                whole: list[tuple[str, float]] = await self._redis.zrangebyscore(
                    keys.JOURNALS[shard], score, score, withscores=True
                )  # type: ignore[assignment]
                groups = _new_groups(whole, mark, cut=False)
            more = more or cut
            groups_by_shard.append(groups)
        return _page(groups_by_shard, cursor, issued_ms, limit, more)


def _new_groups(
    reply: list[tuple[str, float]], mark: tuple[int, int], *, cut: bool
) -> list[list[tuple[str, int]]]:
    """The reply's entries newer than ``mark``, grouped by score, ascending; the last group of a ``cut``
    reply may be incomplete: left out (the next read starts there)."""
    score_seen, count_seen = mark
    groups: list[list[tuple[str, int]]] = []
    for member, raw_score in reply:
        score = int(raw_score)
        if groups and groups[-1][0][1] == score:
            groups[-1].append((str(member), score))
        else:
            groups.append([(str(member), score)])
    if cut and groups:
        groups.pop()
    if groups and groups[0][0][1] == score_seen and len(groups[0]) <= count_seen:
        groups.pop(0)  # that millisecond's entries were all answered already
    return groups


def _page(
    groups_by_shard: list[list[list[tuple[str, int]]]], cursor: Cursor, issued_ms: int, limit: int, more: bool
) -> Page:
    sessions: list[tuple[str, int]] = []
    tokens: list[tuple[str, int]] = []
    accounts: list[tuple[str, int, int]] = []
    marks = list(cursor.marks)
    budget = limit
    for shard, groups in enumerate(groups_by_shard):
        for group in groups:
            if len(group) > budget and budget < limit:
                more = True
                break
            budget -= len(group)
            marks[shard] = (group[0][1], len(group))
            for member, at in group:
                kind, _, value = member.partition(":")
                if kind == "s" and value:
                    sessions.append((value, at))
                elif kind == "j" and value:
                    tokens.append((value, at))
                elif kind == "u":
                    user_id, _, version = value.rpartition(":")
                    if user_id and version.isdigit():
                        accounts.append((user_id, int(version), at))
    return Page(sessions, tokens, accounts, Cursor(issued_ms, tuple(marks)), more)


@contextlib.asynccontextmanager
async def serving(ctx: Context, revocations: Revocations) -> AsyncIterator[Feed]:
    """The process's feed in the context, woken by ``revocations`` and by SIGTERM (parked polls answer)."""
    feed = Feed(ctx.redis)
    ctx.put(feed)
    revocations.on_revoked(feed.revoked)
    undo = on_stop(feed.stop)
    try:
        yield feed
    finally:
        undo()
        feed.stop()
        revocations.on_revoked(feed.revoked, remove=True)
