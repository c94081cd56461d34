"""Every Redis key and channel of seckill, built here and nowhere else.

All keys of one event share the hash tag ``{seckill:ev:<id>}``: every script touches one event only, so it runs
unchanged on Redis Cluster. An event split into N stock buckets (``buckets`` > 1, see ``seckill/buckets.py``) has
one full set of these keys per bucket: bucket 0 keeps ``{seckill:ev:<id>}`` (so a one-bucket event is exactly what
it always was) and bucket b > 0 uses ``{seckill:ev:<id>:<b>}``, another slot, so a hot event spreads over the
cluster's masters. Every script still touches one bucket only. The many small per-purchase keys (rate counters)
are given to the reservation script as prefixes from here, and it appends the user id or the IP. The
registry of events is the one key outside an event's slot; it is only read or written by single commands.
"""

from __future__ import annotations

__all__ = [
    "EVENTS",
    "GROUP",
    "HOLD_MS",
    "LAST_EVENT_ID",
    "ORDERS_CHANNEL",
    "RATE_WINDOW_MS",
    "REPLAY_MS",
    "STOCK_BACK_CHANNEL",
    "EventKeys",
    "event_keys",
]

# Set of every order stream warmed into Redis (its members: ``seckill/refs.py``); workers discover the streams
# they follow from it.
EVENTS = "seckill:events"
# Sorted set with one member ("id") scored by the highest event id ever created (ZADD GT): an id above it names
# no event, so the event cache answers it from memory. Read and written by single commands.
LAST_EVENT_ID = "seckill:events:last-id"
# Consumer group of the order writers on every event stream.
GROUP = "order-writers"
# Published with the event id whenever stock comes back, stock is added, the end moves or the event is created;
# every process forgets that event's sold-out flag and rereads it into its event cache.
STOCK_BACK_CHANNEL = "seckill:stock-back"
# Published with order ids (joined by ",") whenever orders change: written to PostgreSQL (one message per batch),
# paid, cancelled (owner or timeout). Every API process drops them from its order cache and wakes their long polls.
ORDERS_CHANNEL = "seckill:orders"
# Fixed window of the per-user and per-IP attempt counters.
RATE_WINDOW_MS = 1000
# The answers of a reservation script call are kept this long: longer than the kit sends a call whose answer was
# lost again (never later than kit.lane.RESEND_WINDOW_S, 20 s, after its first send; kit/lua.py likewise).
REPLAY_MS = 30_000
# A hold (bucketed events: a purchase counted against the user's limit in the home bucket, its stock still to
# be taken from another bucket) older than this is resolved by the sweeper: longer than any retry of the take.
HOLD_MS = 2 * REPLAY_MS


class EventKeys:
    """The keys of one event (one bucket); each script's KEYS list is built here, for ``seckill/scripts.py``."""

    __slots__ = ("bucket", "changes", "dead", "dead_orders", "event_id", "holds", "idem", "meta", "queued",
                 "quota_returned", "returned", "seq", "stream", "tag", "taken", "users", "voided")  # fmt: skip

    def __init__(self, event_id: int, bucket: int = 0) -> None:
        tag = f"{{seckill:ev:{event_id}}}" if bucket == 0 else f"{{seckill:ev:{event_id}:{bucket}}}"
        self.event_id = event_id
        self.bucket = bucket
        self.tag = tag
        # Hash: stock (left), total, reserved (ever), start_ms, end_ms, limit, sku, title, price, timeout_s.
        self.meta = f"{tag}:meta"
        # Hash user id -> orders currently held (returned orders give the quota back).
        self.users = f"{tag}:users"
        # Hash user id -> orders ever reserved; the per-user sequence that PostgreSQL keeps unique.
        self.seq = f"{tag}:seq"
        # Hash "<user>\n<Idempotency-Key>" -> order id.
        self.idem = f"{tag}:idem"
        # Stream of order messages, read by the order writers' consumer group.
        self.stream = f"{tag}:orders"
        # Hash order id -> user id of every order not yet in PostgreSQL (removed in the same step as XACK).
        self.queued = f"{tag}:queued"
        # Stream of dead-lettered order messages, and hash order id -> user id of those orders.
        self.dead = f"{tag}:dead"
        self.dead_orders = f"{tag}:dead-orders"
        # Set of order ids whose stock and quota went back: makes every give-back happen once.
        self.returned = f"{tag}:returned"
        # Hash of the admin changes (creation, stock added, end moved) applied, by change id: each applies once.
        self.changes = f"{tag}:changes"
        # Bucketed events only. In a user's home bucket: hash order id -> "user\nidempotency field\nms" of the
        # holds not yet resolved, and the set of orders whose quota (not stock) went back here.
        self.holds = f"{tag}:holds"
        self.quota_returned = f"{tag}:quota-returned"
        # In the bucket that gave the stock: set of the held order ids taken here, and of those voided here
        # by the hold sweeper (a voided hold can never be taken afterwards).
        self.taken = f"{tag}:taken"
        self.voided = f"{tag}:voided"

    @property
    def user_rate_prefix(self) -> str:
        """Followed by a user id: that user's attempt counter (the reservation script appends the id)."""
        return f"{self.tag}:rate:u:"

    @property
    def ip_rate_prefix(self) -> str:
        """Followed by a client IP: that address's attempt counter."""
        return f"{self.tag}:rate:ip:"

    def reserve(self, first_order_id: str) -> list[str]:
        """The call's answers are kept under its first order id, which no other call carries."""
        return [
            self.meta, self.users, self.seq, self.idem, self.stream, self.queued, self.holds,
            f"{self.tag}:answers:{first_order_id}",
        ]  # fmt: skip

    def prewarm(self) -> list[str]:
        return [self.meta, self.stream, self.changes]

    def view(self) -> list[str]:
        return [self.meta]

    def take(self) -> list[str]:
        return [self.meta, self.stream, self.queued, self.taken, self.voided]

    def hold(self) -> list[str]:
        return [self.holds, self.users, self.idem]

    def void(self) -> list[str]:
        return [self.taken, self.voided]

    def adjust(self) -> list[str]:
        return [self.meta, self.changes]

    def giveback(self) -> list[str]:
        return [self.meta, self.users, self.returned, self.quota_returned]

    def snapshot(self) -> list[str]:
        return [self.meta, self.queued, self.dead_orders, self.returned]

    def ack(self) -> list[str]:
        return [self.stream, self.queued]

    def dead_letter(self) -> list[str]:
        return [self.stream, self.queued, self.dead, self.dead_orders]

    def requeue(self) -> list[str]:
        return [self.dead, self.dead_orders, self.stream, self.queued]


def event_keys(event_id: int, bucket: int = 0) -> EventKeys:
    return EventKeys(event_id, bucket)
