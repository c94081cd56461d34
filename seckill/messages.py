"""The order message: what a reservation adds to its event's order stream, and its batch INSERT into PostgreSQL.

A message is written by ``reserve.lua`` or ``take.lua`` in the same step as the stock it takes, and stored by
the order writer (``seckill/worker.py``). Its fields have one-letter names: one message per purchase, on the
hot path. The Lua scripts spell them too; ``tests/seckill/test_messages.py`` checks that they agree with these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from asyncpg import UniqueViolationError

from kit.db import Connection

__all__ = [
    "BUCKET",
    "BUCKETED_FIELDS",
    "DEAD_LETTER_FIELDS",
    "DELIVERIES",
    "FIELDS",
    "HOME",
    "ORDER_ID",
    "REASON",
    "RESERVED_MS",
    "RSV",
    "SEQ",
    "SOURCE",
    "USER_ID",
    "insert_orders",
]

ORDER_ID = "o"
USER_ID = "u"
# The user's n-th reservation of the event, kept unique by PostgreSQL: a redelivery never adds a second row.
SEQ = "q"
# The event's n-th reservation (n * buckets + bucket): reconciliation's moment of Redis.
RSV = "r"
# Reserved at, by the Redis clock.
RESERVED_MS = "t"
# Bucketed events only: the stock bucket the order came from, and its user's home bucket.
BUCKET = "b"
HOME = "h"

# In the order the scripts write them; a message of a one-bucket event has no BUCKETED_FIELDS.
FIELDS = (ORDER_ID, USER_ID, SEQ, RSV, RESERVED_MS)
BUCKETED_FIELDS = (BUCKET, HOME)

# Added when a message is dead-lettered (deadletter.lua) and removed when it is put back (requeue.lua).
SOURCE = "src"
REASON = "reason"
DELIVERIES = "deliveries"
DEAD_LETTER_FIELDS = (SOURCE, REASON, DELIVERIES)

# The type PostgreSQL reads each field as.
_SQL_TYPES = {ORDER_ID: "uuid", USER_ID: "text", SEQ: "int", RSV: "bigint", RESERVED_MS: "bigint",
              BUCKET: "smallint", HOME: "smallint"}  # fmt: skip
_RECORD = ", ".join(f"{name} {kind}" for name, kind in _SQL_TYPES.items())

# PostgreSQL reads the batch as one JSON document: the writer hands the messages over as Redis gave them, and
# the parsing and checking of every field happens in C, in one place.
_INSERT = f"""
INSERT INTO seckill_orders (order_id, event_id, user_id, seq, rsv, sku, price, reserved_at, pay_by, bucket, home)
SELECT m.{ORDER_ID}, e.id, m.{USER_ID}, m.{SEQ}, m.{RSV}, e.sku, e.price, to_timestamp(m.{RESERVED_MS} / 1000.0),
       now() + make_interval(secs => e.payment_timeout_s), coalesce(m.{BUCKET}, 0), coalesce(m.{HOME}, 0)
FROM json_to_recordset($2::json) AS m({_RECORD})
JOIN seckill_events e ON e.id = $1
"""


async def insert_orders(conn: Connection, event_id: int, batch: Sequence[Mapping[str, str]]) -> set[str]:
    """Insert a batch of order messages; return the order ids now stored. Each statement is its own
    transaction (call this outside one), so a batch is stored whole or not at all.

    A plain INSERT first: a batch almost never holds an order stored before, and ON CONFLICT's speculative
    insertion costs PostgreSQL a quarter more per row. When one does (a writer died between COMMIT and
    acknowledging, and the batch is redelivered), ON CONFLICT DO NOTHING stores the rest. An order still
    missing then collided with a different order on (event, user, seq): it is not acknowledged and ends as a
    dead letter. A malformed message fails the whole batch (the caller then writes its orders one by one).
    """
    ids = [m[ORDER_ID] for m in batch]
    try:
        # The pool's json codec (kit/db.py) renders the batch with orjson.
        status = await conn.execute(_INSERT, event_id, batch)
    except UniqueViolationError:
        status = await conn.execute(_INSERT + "ON CONFLICT DO NOTHING", event_id, batch)
    if int(status.rsplit(" ", 1)[1]) == len(ids):
        return set(ids)
    if await conn.fetchval("SELECT 1 FROM seckill_events WHERE id = $1", event_id) is None:
        raise LookupError(f"event {event_id} is not in PostgreSQL")
    rows = await conn.fetch(
        "SELECT order_id::text FROM seckill_orders WHERE order_id = ANY($1::uuid[]) AND event_id = $2",
        ids,
        event_id,
    )
    return {r[0] for r in rows}
