"""Dead letters: order messages that failed too many deliveries, listed and put back on their stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit.context import Context
from seckill import keys, messages, refs, scripts
from seckill.events import registered_streams

__all__ = ["DeadLetter", "dead_letters", "requeue"]


@dataclass(frozen=True)
class DeadLetter:
    event_id: int
    bucket: int
    entry_id: str
    order_id: str
    user_id: str
    deliveries: str
    reason: str

    @property
    def ref(self) -> str:
        """What `peak seckill dead-letters --retry` takes: EVENT:ID, or EVENT/BUCKET:ID for a bucket > 0."""
        return refs.dead_letter_ref(self.event_id, self.bucket, self.entry_id)


async def dead_letters(ctx: Context, event_ids: list[int]) -> list[DeadLetter]:
    found = []
    wanted = set(event_ids)
    for event_id, bucket in sorted(await registered_streams(ctx)):
        if event_id not in wanted:
            continue
        entries: Any = await ctx.redis.xrange(keys.event_keys(event_id, bucket).dead)
        for entry_id, fields in entries:
            found.append(
                DeadLetter(
                    event_id, bucket, entry_id, fields.get(messages.ORDER_ID, "?"),
                    fields.get(messages.USER_ID, "?"), fields.get(messages.DELIVERIES, "?"),
                    fields.get(messages.REASON, ""),
                )
            )  # fmt: skip
    return found


async def requeue(ctx: Context, event_id: int, entry_id: str, bucket: int = 0) -> str | None:
    """Move a dead letter back to its order stream; the new stream entry id, or None if there is none."""
    return await scripts.requeue(ctx.redis, keys.event_keys(event_id, bucket), entry_id)
