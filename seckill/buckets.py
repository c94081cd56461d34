"""Hot-SKU stock buckets: one event's stock split over N buckets, each in its own cluster slot.

Why it is correct (no script ever sees two buckets):

Zero oversell. Each bucket holds a share of the stock in its own meta hash, and stock leaves a bucket only in
a script on that bucket that found it above zero (``seckill_reserve`` or ``seckill_take``), in the same script
as the XADD of its order message. The shares add up to the event's stock (creation and ``add_stock`` split
the number, they never copy it), so the orders can never outnumber the stock, whatever the interleaving.

Per-user limits. A user's count lives in ONE bucket only, the user's home bucket (``home_bucket``: a hash of
the user id, so every process picks the same one). Every purchase starts with a call on the home bucket,
which checks the count against the limit and increments it in the same atomic step, exactly as with one
bucket. When the home bucket has stock it also takes it there (one call: the common case and the only case
of a one-bucket event). When it is sold out it records a *hold* instead (order id -> user, in the home
bucket's holds hash) and answers ``hold``; the process then offers that order id to the other buckets with
``seckill_take``, one after the other, and the first with stock takes it, adding the order id to its
``taken`` set. A take refuses an order id already taken there (a retry replays) or voided there, so one hold
yields at most one order. The count is only decremented again when the hold is proven unused: by the same
process after EVERY other bucket answered ``sold_out`` (a definite "not taken"; any failure leaves the hold
alone), or by the hold sweeper (``seckill.timeouts``) for a hold older than ``keys.HOLD_MS``, which first
*voids* the order id in every other bucket (``seckill_void``: it answers "taken" if the take already
happened, else it adds the id to ``voided`` so no take can ever happen later) and releases the hold only if
no bucket took it, otherwise it just forgets the hold. So at every moment a user's orders are at most the
count in the home bucket, which never exceeds the limit; a process crashing between the steps at worst
holds a user's quota until the sweeper, never sells beyond it. Cancellation gives the stock back to the
bucket it came from and the quota back to the home bucket, each idempotent by order id.
"""

from __future__ import annotations

import zlib

__all__ = ["MAX_BUCKETS", "home_bucket", "split"]

MAX_BUCKETS = 64


def home_bucket(user_id: str, buckets: int) -> int:
    """The bucket holding the user's count for an event of `buckets` buckets (stable across processes)."""
    return 0 if buckets <= 1 else zlib.crc32(user_id.encode()) % buckets


def split(stock: int, buckets: int) -> list[int]:
    """`stock` shared over `buckets` as evenly as possible, the remainder to the first ones."""
    share, rest = divmod(stock, buckets)
    return [share + (1 if b < rest else 0) for b in range(buckets)]
