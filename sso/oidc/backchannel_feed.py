"""Back-channel logout, first half: which OIDC sessions ended, and one delivery per client to tell.

Every ``_STEP_S`` a worker runs ``lua/backchannel_scan.lua`` on each of the shards (one call per shard, all sent
together): it reads the shard's revocation journal from a cursor kept in the shard's slot, sweeps the sessions
past their absolute end, and now and then a slice of the shard's OIDC sessions whose session key is gone (idle
expiry); each ended session goes to the shard's outbox with the cursor advanced, in one atomic step. Then the
worker moves the outbox to ``keys.BACKCHANNEL_STREAM`` (one entry per client with a ``backchannel_logout_uri``)
and deletes what it moved.

The stream is in another slot than the shard, so the move is not atomic: a worker that dies between its XADD
and its XDEL leaves the entry in the outbox and the next move adds it again (a duplicate logout token: at least
once, never none). Each shard is read by one worker at a time (a lease of ``_LEASE_MS`` in the shard's slot,
renewed every step), so two workers do not move the same outbox entry; a dead worker's shards are taken over
when its lease runs out.

Idle expiry is found by looking: every PEAK_SSO_BACKCHANNEL_IDLE_CHECK_S (30 s) the worker walks each shard's
OIDC sessions, ``_IDLE_SLICE`` per step and shard (an HGET and an EXISTS each, inside the script), so its cost is
about two Redis commands per live OIDC session per period, and an idle session's logout goes out within that
period. The same walk is the safety net for a journal entry the cursor missed (a worker away for longer than the
journal keeps entries, a clock step back).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from kit.lua import Call, Script
from kit.redis import RedisClient
from sso import keys

__all__ = ["SCRIPTS", "BackchannelFeed", "ClientUri"]

log = logging.getLogger("peak.sso")

BACKCHANNEL_SCAN = Script.of("sso", "backchannel_scan")
SCRIPTS = (BACKCHANNEL_SCAN,)

_LEASE_MS = 10_000
_BATCH = 500
_IDLE_SLICE = 200
_MOVE_COUNT = 100

# The client's backchannel_logout_uri, or None when it has none (or is unknown): tells nobody.
ClientUri = Callable[[str], "str | None"]


class BackchannelFeed:
    def __init__(self, redis: RedisClient, *, idle_check_s: float) -> None:
        self._redis = redis
        self._token = secrets.token_hex(8)
        self._idle_check_s = idle_check_s
        self._idle_next_at = 0.0
        # Per shard: the rank where the idle walk goes on, or None when it is not walking.
        self._idle_rank: list[int | None] = [None] * keys.SHARDS

    def _calls(self) -> list[Call]:
        now = time.monotonic()
        if now >= self._idle_next_at and all(rank is None for rank in self._idle_rank):
            self._idle_next_at = now + self._idle_check_s
            self._idle_rank = [0] * keys.SHARDS
        calls: list[Call] = []
        for shard in range(keys.SHARDS):
            rank = self._idle_rank[shard]
            calls.append((
                [keys.JOURNALS[shard], keys.backchannel_cursor(shard), keys.oidc_expiries(shard),
                 keys.backchannel_outbox(shard), keys.backchannel_lease(shard)],
                [self._token, _LEASE_MS, keys.oidc_session_prefix(shard), keys.shard_user_prefix(shard), _BATCH,
                 -1 if rank is None else rank, _IDLE_SLICE],
            ))  # fmt: skip
        return calls

    async def step(self, client_uri: ClientUri) -> int:
        """Scan every shard this worker holds (or can take) and move their outboxes; deliveries queued."""
        replies = await BACKCHANNEL_SCAN.run_many(self._redis, self._calls())
        queued = 0
        for shard, reply in enumerate(replies):
            if isinstance(reply, Exception):
                raise reply
            held, waiting, next_rank = (int(v) for v in reply)
            if not held:
                self._idle_rank[shard] = None  # another worker walks it
                continue
            self._idle_rank[shard] = None if next_rank < 0 else next_rank
            if waiting:
                queued += await self._move(shard, client_uri)
        return queued

    async def _move(self, shard: int, client_uri: ClientUri) -> int:
        outbox = keys.backchannel_outbox(shard)
        queued = 0
        while True:
            entries: Any = await self._redis.xrange(outbox, count=_MOVE_COUNT)
            if not entries:
                return queued
            for entry_id, fields in entries:
                sid, sub = _text(fields, "sid"), _text(fields, "sub")
                try:
                    clients = [str(c) for c in orjson.loads(_text(fields, "clients") or "[]")]
                except orjson.JSONDecodeError:
                    clients = []
                for client_id in clients:
                    uri = client_uri(client_id)
                    if uri is None:
                        continue
                    await self._redis.xadd(
                        keys.BACKCHANNEL_STREAM, {"sid": sid, "sub": sub, "client": client_id}
                    )
                    queued += 1
                await self._redis.xdel(outbox, entry_id)
            if len(entries) < _MOVE_COUNT:
                return queued


def _text(fields: Any, name: str) -> str:
    value = fields.get(name) if isinstance(fields, dict) else None
    if value is None:
        value = fields.get(name.encode()) if isinstance(fields, dict) else None
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
