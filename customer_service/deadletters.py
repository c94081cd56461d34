"""The inbox entries PostgreSQL refused, for ops: list them, put one (or all) back, or drop one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.client import NEVER_DECODE

from customer_service import keys, scripts
from kit.context import Context

__all__ = ["DeadLetter", "drop", "is_entry_id", "listing", "requeue"]

_ENTRY_ID = re.compile(r"[0-9]{1,16}-[0-9]{1,19}", re.ASCII)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    inbox_entry: str
    reason: str
    fields: dict[str, str]


def is_entry_id(text: str) -> bool:
    return bool(_ENTRY_ID.fullmatch(text))


async def listing(ctx: Context, *, limit: int, after: str = "-") -> list[DeadLetter]:
    """Oldest first, at most ``limit``, after the dead letter ``after`` (exclusive)."""
    start = "-" if after == "-" else f"({after}"
    # Read as bytes: a dead letter may be one because it is not UTF-8.
    redis: Any = ctx.redis
    rows: Any = await redis.execute_command(
        "XRANGE", keys.DEAD_LETTERS, start, "+", "COUNT", limit, **{NEVER_DECODE: True}
    )
    letters = []
    for raw_id, raw_fields in rows or ():
        stored = {_text(k): _text(v) for k, v in raw_fields.items()}
        fields = {k: v for k, v in stored.items() if k not in ("_src", "_reason")}
        letters.append(DeadLetter(_text(raw_id), stored.get("_src", ""), stored.get("_reason", ""), fields))
    return letters


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


async def requeue(ctx: Context, dead_id: str) -> str | None:
    """Back on the inbox (the worker tries it again): its new entry id, or None if there is no such letter."""
    return await scripts.requeue(ctx.redis, dead_id)


async def drop(ctx: Context, dead_id: str) -> bool:
    return bool(await ctx.redis.xdel(keys.DEAD_LETTERS, dead_id))
