"""Dead letters: order messages that failed too many deliveries, listed and put back on their stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peak.context import Context
from seckill import keys

__all__ = ["DeadLetter", "dead_letters", "requeue"]


@dataclass(frozen=True)
class DeadLetter:
    event_id: int
    entry_id: str
    order_id: str
    user_id: str
    deliveries: str
    reason: str

    @property
    def ref(self) -> str:
        """What `peak seckill dead-letters --retry` takes."""
        return f"{self.event_id}:{self.entry_id}"


async def dead_letters(ctx: Context, event_ids: list[int]) -> list[DeadLetter]:
    found = []
    for event_id in event_ids:
        entries: Any = await ctx.redis.xrange(keys.event_keys(event_id).dead)
        for entry_id, fields in entries:
            found.append(
                DeadLetter(
                    event_id, entry_id, fields.get("o", "?"), fields.get("u", "?"),
                    fields.get("deliveries", "?"), fields.get("reason", ""),
                )
            )  # fmt: skip
    return found


async def requeue(ctx: Context, event_id: int, entry_id: str) -> str | None:
    """Move a dead letter back to its order stream; the new stream entry id, or None if there is none."""
    k = keys.event_keys(event_id)
    new_id = await ctx.scripts["seckill_requeue"](ctx.redis, k.requeue(), [entry_id])
    return str(new_id) if new_id else None
