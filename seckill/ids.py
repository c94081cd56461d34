"""Order ids: UUIDv7 made in the process, unique across processes and Redis shards without asking anyone.

48 bits of milliseconds keep them roughly time-ordered (good for the PostgreSQL index); 74 random bits make
a collision between two processes in the same millisecond negligible.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_order_id"]


def new_order_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & 0x3FFFFFFFFFFFFFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
