"""What each panel of the console shows, read the way the degrade API answers it (the hub calls these).

Every read here is one Redis call (or the board in memory); the hub decides how often, and only while a
console is open.
"""

from __future__ import annotations

import time
from typing import Any

import degrade.plans
import degrade.series
from degrade import store
from degrade.board import Board
from kit.redis import RedisClient

__all__ = [
    "AUDIT_SNAPSHOT",
    "SERIES_MINUTES",
    "audit_after",
    "audit_newest",
    "breakers",
    "plans",
    "series_after",
    "series_since",
    "switches",
]

# The snapshot's audit: the newest entries, newest first.
AUDIT_SNAPSHOT = 50
# The snapshot's signals: the last hour.
SERIES_MINUTES = 60
_AUDIT_BATCH = 200


def switches(board: Board, *, redis_failed: bool) -> dict[str, Any]:
    """As ``GET /degrade/switches`` answers: every switch and the board's status."""
    body: dict[str, Any] = {
        "switches": [board.describe(name) for name in sorted(board.subsystems)],
        **board.status(),
    }
    if redis_failed:
        body["redis"] = "unreachable"
    return body


def same_switches(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal but for the resync time (it moves every PEAK_DEGRADE_RESYNC_S without any change)."""
    if a is None:
        return False
    return {k: v for k, v in a.items() if k != "synced_at"} == {
        k: v for k, v in b.items() if k != "synced_at"
    }


async def plans(redis: RedisClient) -> list[dict[str, Any]]:
    return await degrade.plans.list_plans(redis)


async def audit_newest(redis: RedisClient, limit: int = AUDIT_SNAPSHOT) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries, newest first."""
    entries, _ = await store.audit_page(redis, limit=limit)
    return entries


async def audit_after(redis: RedisClient, last_id: str) -> list[dict[str, Any]]:
    """Entries after ``last_id`` (exclusive), newest first; at most a batch per call."""
    entries = await store.audit(redis, since=last_id, limit=_AUDIT_BATCH)
    entries.reverse()
    return entries


async def series_since(redis: RedisClient, minutes: int = SERIES_MINUTES) -> dict[str, Any]:
    return await degrade.series.read(redis, since_ms=int(time.time() * 1000) - minutes * 60_000)


async def series_after(redis: RedisClient, after: str) -> dict[str, Any]:
    return await degrade.series.read(redis, after=after)


async def breakers(redis: RedisClient) -> list[dict[str, Any]]:
    """Each live process's breakers, from its heartbeat record."""
    found = []
    for record in sorted(await store.processes(redis), key=lambda r: str(r.get("id"))):
        states = record.get("breakers") or {}
        found.append(
            {
                "process": record.get("id"),
                "role": record.get("role"),
                "breakers": [{"name": name, **state} for name, state in sorted(states.items())],
            }
        )
    return found
