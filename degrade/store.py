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

__all__ = [
    "AUDIT_SCAN_MAX",
    "audit",
    "audit_page",
    "change",
    "epoch_ms",
    "heartbeat",
    "load",
    "note_pressure",
    "processes",
]

# ASCII digits only (``\d`` also matches "²" and other digits Redis refuses), and the whole string (``$`` would
# let a trailing newline through). Milliseconds up to year 318857; a sequence below 2**63.
_STREAM_ID = re.compile(r"([0-9]{1,16})(?:-([0-9]{1,19}))?", re.ASCII)
# A filtered audit page reads at most this many entries, then answers what it found with ``next`` where it
# stopped, so a filter that matches little costs a bounded time and the client goes on from there.
AUDIT_SCAN_MAX = 5000
_SCAN_BATCH = 500
# Audit entries of plans: their ``old`` and ``new`` name the subsystems they touch (``reviews=shed,...``).
_PLAN_FIELDS = frozenset({"plan", "rollback", "plan_edit", "schedule", "cancel"})


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


def epoch_ms(value: str, what: str) -> int:
    """Epoch milliseconds from ASCII digits or an ISO 8601 time with its zone; 422 naming ``what`` otherwise."""
    if value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise InvalidRequest(f"{what} needs a time zone, e.g. 2026-11-26T14:00:00Z")
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{what} must be an ISO 8601 time (2026-11-26T14:00:00Z) or epoch milliseconds"
        ) from None


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
    return [_entry(entry_id, fields) for entry_id, fields in rows]


def _entry(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    at = fields.get("at", "")
    ms = int(at) if at.isascii() and at.isdigit() else int(entry_id.split("-")[0])
    return {
        "id": entry_id,
        "at": iso_ms(ms),
        "name": fields.get("name"),
        "field": fields.get("field"),
        "old": fields.get("old"),
        "new": fields.get("new"),
        "reason": fields.get("reason"),
        "by": fields.get("by"),
        "source": fields.get("source"),
    }


def _touched(text: str) -> set[str]:
    """Subsystems a plan entry's ``old`` or ``new`` names (``reviews=shed,cs=auto at 2026-...``)."""
    return {part.partition("=")[0] for part in text.partition(" at ")[0].split(",") if "=" in part}


def _matches(fields: dict[str, str], name: str | None, by: str | None) -> bool:
    if by is not None and fields.get("by") != by:
        return False
    if name is None or fields.get("name") == name:
        return True
    return fields.get("field") in _PLAN_FIELDS and (
        name in _touched(fields.get("old", "")) or name in _touched(fields.get("new", ""))
    )


async def audit_page(
    redis: RedisClient,
    *,
    name: str | None = None,
    by: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    before: str | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], str | None]:
    """Entries newest first: of subsystem or plan ``name`` (a plan's entries count for every subsystem it
    touches), by ``by``, from ``from_ms`` to ``to_ms`` (inclusive), older than entry ``before``. At most
    ``AUDIT_SCAN_MAX`` entries are read; ``next`` is the id to pass as ``before`` for more, None at the end."""
    high = "+"
    if before is not None:
        found = _STREAM_ID.fullmatch(before)
        if found is None:
            raise InvalidRequest("query parameter 'before' must be an audit entry id (as in 'next')")
        ms, seq = int(found.group(1)), int(found.group(2) or 0)
        if ms == 0 and seq == 0:
            return [], None
        if to_ms is None or ms <= to_ms:
            high = f"({ms}-{seq}"
    if high == "+" and to_ms is not None:
        if to_ms < 0:
            return [], None
        high = str(to_ms)
    low = "-" if from_ms is None else str(max(0, from_ms))
    filtered = name is not None or by is not None
    entries: list[dict[str, Any]] = []
    scanned = 0
    while scanned < AUDIT_SCAN_MAX:
        count = min(AUDIT_SCAN_MAX - scanned, _SCAN_BATCH if filtered else limit - len(entries))
        rows: list[tuple[str, dict[str, str]]] = await redis.xrevrange(
            keys.AUDIT, max=high, min=low, count=count
        )  # type: ignore[assignment]
        scanned += len(rows)
        for entry_id, fields in rows:
            if _matches(fields, name, by):
                entries.append(_entry(entry_id, fields))
                if len(entries) >= limit:
                    return entries, entry_id
        if len(rows) < count:
            return entries, None
        high = "(" + rows[-1][0]
    return entries, high[1:]


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
