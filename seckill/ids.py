"""Order ids: RFC 9562 UUIDs made in the process that name their event and home bucket.

Layout of a new id (version 8, "custom"), most significant bit first:

    48 bits  Unix milliseconds (as UUIDv7: ids stay time-ordered, good for the PostgreSQL index)
     4 bits  version 8
    12 bits  event id, high 12 of 32
     2 bits  variant 0b10
    20 bits  event id, low 20 of 32
     6 bits  home bucket (0-63, ``seckill.buckets.MAX_BUCKETS``)
    36 bits  random

So a poll finds a queued order in its own bucket's hashes, with no scan over the active events
(``seckill/orderwatch.py``). Two ids can only be equal when they are made in the same millisecond for the same
event and home bucket with the same 36 random bits: at n reservations per millisecond in one bucket, a chance of
about n^2 / 2^37 per millisecond: 7e-10 at 10 per ms (10,000 orders/s in one bucket), 6e-8 at 90 per ms (about
the most one Redis core reserves, at 11 us of script time each). ``reserve.lua`` still
refuses an id already queued (HSETNX) and the process retries with a new one, so even that collision costs a
retry, not an order. Events with an id at or above 2^32 get the UUIDv7 ids of before (74 random bits), found
by the slower scan; so do ids made before this layout.

The random bits come from the operating system's CSPRNG, fetched 4 KiB at a time: one ``os.urandom`` call per
id was most of the 1.5 us an id cost on the purchase path. A forked child drops the bytes it inherited, so two
processes never hand out the same ones.
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["EVENT_BITS", "home_of", "new_order_id"]

EVENT_BITS = 32
_EVENT_LIMIT = 1 << EVENT_BITS
_BUCKET_LIMIT = 64
_POOL_BYTES = 4000  # 400 ids
_pool = b""
_taken = 0


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random(count: int) -> bytes:
    global _pool, _taken
    if _taken + count > len(_pool):
        _pool, _taken = os.urandom(_POOL_BYTES), 0
    r = _pool[_taken : _taken + count]
    _taken += count
    return r


def new_order_id(event_id: int | None = None, bucket: int = 0) -> str:
    """A new order id naming ``event_id`` and the user's home ``bucket`` (a UUIDv7 without an event, or for
    an event id beyond 32 bits)."""
    ms = time.time_ns() // 1_000_000
    if event_id is None or not 0 <= event_id < _EVENT_LIMIT or not 0 <= bucket < _BUCKET_LIMIT:
        r = _random(10)
        # version 7 in the high nibble of byte 6, variant 0b10 in the high bits of byte 8 (RFC 9562)
        h = (ms.to_bytes(6, "big") + bytes((0x70 | r[0] & 0x0F, r[1], 0x80 | r[2] & 0x3F)) + r[3:]).hex()
    else:
        value = (
            (ms & 0xFFFF_FFFF_FFFF) << 80
            | 0x8 << 76
            | (event_id >> 20) << 64
            | 0b10 << 62
            | (event_id & 0xF_FFFF) << 42
            | bucket << 36
            | int.from_bytes(_random(5)) >> 4
        )
        h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def home_of(order_id: uuid.UUID) -> tuple[int, int] | None:
    """(event id, home bucket) named by a version 8 order id; None for any other id (made before, or for an
    event id beyond 32 bits): those are found by the scan."""
    value = order_id.int
    if (value >> 76) & 0xF != 8 or (value >> 62) & 0b11 != 0b10:
        return None
    event_id = ((value >> 64) & 0xFFF) << 20 | (value >> 42) & 0xF_FFFF
    return event_id, (value >> 36) & 0x3F
