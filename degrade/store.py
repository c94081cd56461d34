"""Switches, audit, heartbeats and pressure in Redis (a switch is set by its script, ``degrade/scripts.py``)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import orjson

from degrade import keys
from degrade.board import Board, iso_ms
from degrade.scripts import Change, SetRequest, SetStatus, set_field
from degrade.settings import DegradeSettings
from kit.context import Context
from kit.errors import InvalidRequest
from kit.redis import RedisClient

__all__ = ["audit", "change", "heartbeat", "load", "note_pressure", "processes"]

# ASCII digits only (``\d`` also matches "²" and other digits Redis refuses), and the whole string (``$`` would
# let a trailing newline through). Milliseconds up to year 318857; a sequence below 2**63.
_STREAM_ID = re.compile(r"([0-9]{1,16})(?:-([0-9]{1,19}))?", re.ASCII)


async def load(redis: RedisClient) -> dict[str, str]:
    stored: dict[str, str] = await redis.hgetall(keys.SWITCHES)  # type: ignore[assignment]
    return stored


async def change(ctx: Context, board: Board, request: SetRequest) -> Change:
    r = request
    audit_max = ctx.settings.of(DegradeSettings).audit_max
    result = await set_field(ctx.redis, r, default=board.default(r.name, r.field), audit_max=audit_max)
    if result.status is SetStatus.CHANGED:
        # Apply at once here; the other processes hear it on the channel.
        board.apply(
            {"name": r.name, "field": r.field, "new": r.value, "at": result.since_ms, "reason": r.reason,
             "by": r.who, "source": r.source}
        )  # fmt: skip
    return result


def _since_id(since: str) -> str:
    """A stream id from what ``?since=`` accepts: a stream id, epoch milliseconds or an ISO 8601 time; a
    value Redis would refuse is a 422 here, never a Redis error."""
    if _STREAM_ID.fullmatch(since):
        return since
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise InvalidRequest("since needs a time zone, e.g. 2026-11-26T14:00:00Z")
        ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            "since must be an ISO 8601 time (2026-11-26T14:00:00Z), epoch milliseconds or an audit entry id"
        ) from None
    # Before 1970 is before any entry.
    return str(max(0, ms))


async def audit(redis: RedisClient, *, since: str | None, limit: int) -> list[dict[str, Any]]:
    """Entries oldest first; ``since`` excludes an entry id it names exactly, so it can page."""
    start = "-" if since is None else _since_id(since)
    if since is not None and "-" in start:
        start = "(" + start
    rows: list[tuple[str, dict[str, str]]] = await redis.xrange(keys.AUDIT, min=start, max="+", count=limit)  # type: ignore[assignment]
    entries = []
    for entry_id, fields in rows:
        at = int(fields.get("at", entry_id.split("-")[0]))
        entries.append(
            {
                "id": entry_id,
                "at": iso_ms(at),
                "name": fields.get("name"),
                "field": fields.get("field"),
                "old": fields.get("old"),
                "new": fields.get("new"),
                "reason": fields.get("reason"),
                "by": fields.get("by"),
                "source": fields.get("source"),
            }
        )
    return entries


async def heartbeat(redis: RedisClient, process_id: str, record: dict[str, Any], ttl_s: float) -> None:
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.heartbeat(process_id), orjson.dumps(record), px=int(ttl_s * 1000))
        pipe.zadd(keys.PROCESSES, {process_id: now_ms + int(ttl_s * 1000)})
        pipe.zremrangebyscore(keys.PROCESSES, "-inf", now_ms)
        await pipe.execute()


async def processes(redis: RedisClient) -> list[dict[str, Any]]:
    now_ms = int(time.time() * 1000)
    ids: list[str] = await redis.zrangebyscore(keys.PROCESSES, now_ms, "+inf")  # type: ignore[assignment]
    if not ids:
        return []
    records = await redis.mget([keys.heartbeat(i) for i in ids])
    return [orjson.loads(r) for r in records if r]


async def note_pressure(redis: RedisClient, process_id: str) -> None:
    await redis.zadd(keys.PRESSURE, {process_id: int(time.time() * 1000)})
