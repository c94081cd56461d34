"""seckill's Lua scripts (``seckill/lua/``), each bound once, with the keys it runs on and its replies decoded.

Each script's contract heads its Lua file; its KEYS come from ``seckill/keys.py``. Callers get dataclasses, or
the exceptions of ``seckill/errors.py``, never a reply code. The component loads ``ALL`` at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kit.lua import EncodableT, Script, Wait
from kit.redis import RedisClient
from seckill import keys
from seckill.errors import REFUSALS, EventNotFound
from seckill.keys import EventKeys
from seckill.settings import SeckillSettings

__all__ = [
    "ACK",
    "ADJUST",
    "ALL",
    "DEADLETTER",
    "GIVEBACK",
    "HOLD",
    "PREWARM",
    "REPAIR",
    "REQUEUE",
    "RESERVE",
    "SNAPSHOT",
    "TAKE",
    "VIEW",
    "VOID",
    "EventView",
    "Held",
    "Reservation",
    "Snapshot",
    "StockLevel",
    "Taken",
    "ack",
    "adjust",
    "dead_letter",
    "give_back",
    "prewarm",
    "requeue",
    "reservations",
    "reserve",
    "reserve_args",
    "resolve_hold",
    "snapshot",
    "take",
    "taken",
    "view",
    "void",
]

RESERVE = Script.of("seckill", "reserve")
TAKE = Script.of("seckill", "take")
HOLD = Script.of("seckill", "hold")
VOID = Script.of("seckill", "void")
PREWARM = Script.of("seckill", "prewarm")
ADJUST = Script.of("seckill", "adjust")
VIEW = Script.of("seckill", "view")
GIVEBACK = Script.of("seckill", "giveback")
SNAPSHOT = Script.of("seckill", "snapshot")
ACK = Script.of("seckill", "ack")
DEADLETTER = Script.of("seckill", "deadletter")
REQUEUE = Script.of("seckill", "requeue")
# Re-derivation after a failover (seckill/rederive.py decodes its replies).
REPAIR = Script.of("seckill", "repair")
ALL = (RESERVE, TAKE, HOLD, VOID, PREWARM, ADJUST, VIEW, GIVEBACK, SNAPSHOT, ACK, DEADLETTER, REQUEUE, REPAIR)


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    # False when an Idempotency-Key (or a lost-reply retry) found the order made earlier.
    new: bool


@dataclass(frozen=True, slots=True)
class Held:
    """The home bucket is sold out and counted the purchase against the user's limit; its stock is still to be
    taken from another bucket (``take``, see ``seckill/buckets.py``)."""

    order_id: str
    # The user's n-th reservation, counted in the home bucket: the order message's seq wherever it is taken.
    seq: str


@dataclass(frozen=True, slots=True)
class Taken:
    """A held purchase's stock, taken in a bucket now or by an earlier call (a replay)."""

    order_id: str
    # That bucket has no stock left now.
    emptied: bool


@dataclass(frozen=True, slots=True)
class EventView:
    now_ms: int
    sku: str
    title: str
    price: int
    start_ms: int
    end_ms: int
    # Of the bucket read.
    stock: int
    limit: int
    buckets: int
    ticket_required: bool = False
    spread_ms: int = 0
    # The event's ticket secret: None before the Redis clock reached the start (view.lua withholds it).
    secret: bytes | None = None


@dataclass(frozen=True, slots=True)
class StockLevel:
    left: int
    total: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    stock_left: int
    stock_total: int
    reservations: int
    returned: int
    queued: list[str]
    dead: list[str]


def reserve_args(settings: SeckillSettings, k: EventKeys) -> list[EncodableT]:
    """The arguments of a reservation call before its purchases: the same on every call of a bucket."""
    return [settings.user_rate_per_s, settings.ip_rate_per_s, keys.RATE_WINDOW_MS,
            k.user_rate_prefix, k.ip_rate_prefix, keys.REPLAY_MS]  # fmt: skip


def reserve(
    redis: RedisClient,
    k: EventKeys,
    head: Sequence[EncodableT],
    purchases: Sequence[str],
    wait: Wait | None = None,
) -> Awaitable[list[Any]]:
    """One call for a batch of purchases ("order id\\nuser id\\nclient IP\\nidempotency key" each) after
    ``reserve_args``; its replies, one per purchase, for ``reservations``; with ``wait``, raises
    ``ReplicaWaitError`` unless the replicas confirmed it. Not a coroutine itself: the purchase path awaits
    the script call directly."""
    first_order_id = purchases[0].partition("\n")[0]
    return RESERVE(redis, k.reserve(first_order_id), [*head, *purchases], wait=wait)


def reservations(replies: Sequence[Any], event_id: int) -> tuple[list[Reservation | Held | Exception], bool]:
    """Each purchase's answer (a refusal in its place), and whether the bucket was seen sold out."""
    answers: list[Reservation | Held | Exception] = []
    emptied = False
    for reply in replies:
        code = reply[0]
        if code == "ok":
            answers.append(Reservation(str(reply[1]), True))
            if int(reply[2]) <= 0:
                emptied = True
        elif code == "replay":
            answers.append(Reservation(str(reply[1]), False))
        elif code == "hold":
            answers.append(Held(str(reply[1]), str(reply[2])))
            emptied = True
        else:
            # Only a one-bucket event answers sold_out; a bucketed one holds the purchase instead.
            emptied = emptied or code == "sold_out"
            answers.append(_refusal(RESERVE, code, reply, event_id))
    return answers, emptied


async def take(
    redis: RedisClient,
    k: EventKeys,
    order_id: str,
    user_id: str,
    seq: str,
    home: int,
    wait: Wait | None = None,
) -> Taken | Exception:
    """Offer a held purchase to bucket ``k``. A refusal is returned, not raised, so that the caller tells an
    answer (``SoldOut``: none here; ``Voided``: the hold sweeper fenced it off) from a failed call."""
    return taken(await TAKE(redis, k.take(), [order_id, user_id, seq, home], wait=wait), k.event_id)


def taken(reply: Sequence[Any], event_id: int) -> Taken | Exception:
    """A take's reply decoded (as ``take`` answers it)."""
    code = reply[0]
    if code == "ok":
        return Taken(str(reply[1]), int(reply[2]) <= 0)
    if code == "replay":
        return Taken(str(reply[1]), False)
    return _refusal(TAKE, code, reply, event_id)


async def resolve_hold(
    redis: RedisClient, home: EventKeys, how: Literal["confirm", "release"], order_id: str
) -> bool:
    """Confirm a hold (a bucket took it) or release it (the quota back); whether this call resolved it."""
    return bool(await HOLD(redis, home.hold(), [how, order_id]))


async def void(redis: RedisClient, k: EventKeys, order_id: str) -> bool:
    """Fence a stale hold off bucket ``k``; whether that bucket had taken it already."""
    return bool(await VOID(redis, k.void(), [order_id]))


async def prewarm(
    redis: RedisClient,
    k: EventKeys,
    *,
    sku: str,
    title: str,
    price: int,
    stock: int,
    start_ms: int,
    end_ms: int,
    per_user_limit: int,
    payment_timeout_s: int,
    buckets: int,
    ticket_required: bool = False,
    spread_ms: int = 0,
    secret: bytes = b"",
    change_id: str,
) -> bool:
    """Warm bucket ``k`` of an event (``stock`` is its share; the ticket ``secret`` goes to bucket 0 only), once
    per creation ``change_id``; False if it was warm already."""
    args: list[EncodableT] = [keys.GROUP, sku, title, price, stock, start_ms, end_ms, per_user_limit,
                              payment_timeout_s, buckets, k.bucket, int(ticket_required), spread_ms,
                              secret.hex() if k.bucket == 0 else "", change_id]  # fmt: skip
    return bool(await PREWARM(redis, k.prewarm(), args))


async def adjust(
    redis: RedisClient, k: EventKeys, *, add_stock: int, end_ms: int | None, change_id: str
) -> StockLevel:
    """Add stock to bucket ``k`` and/or move the end, once per change id."""
    args: list[EncodableT] = [add_stock, "" if end_ms is None else end_ms, keys.STOCK_BACK_CHANNEL,
                              k.event_id, change_id]  # fmt: skip
    reply = await ADJUST(redis, k.adjust(), args)
    if not reply:
        raise EventNotFound(k.event_id)
    return StockLevel(int(reply[0]), int(reply[1]))


async def view(redis: RedisClient, k: EventKeys) -> EventView:
    """Bucket ``k``'s meta hash and the Redis clock, read at one moment (the ticket secret once started)."""
    reply = await VIEW(redis, k.view(), ["view"])
    if not reply:
        raise EventNotFound(k.event_id)
    meta = dict(zip(reply[1::2], reply[2::2], strict=True))
    return EventView(
        now_ms=int(reply[0]), sku=meta["sku"], title=meta["title"], price=int(meta["price"]),
        start_ms=int(meta["start_ms"]), end_ms=int(meta["end_ms"]), stock=int(meta["stock"]),
        limit=int(meta["limit"]), buckets=int(meta.get("buckets", 1)),
        ticket_required=meta.get("ticket") == "1", spread_ms=int(meta.get("spread_ms", 0)),
        secret=bytes.fromhex(meta["secret"]) if "secret" in meta else None,
    )  # fmt: skip


async def give_back(
    redis: RedisClient,
    k: EventKeys,
    what: Literal["both", "stock", "quota"],
    orders: Sequence[tuple[str, str]],
) -> int | None:
    """Give the stock and/or quota of (order id, user id)s back to bucket ``k``, once per order: how many this
    call gave back, or None if the event is not in Redis."""
    args: list[EncodableT] = [keys.STOCK_BACK_CHANNEL, k.event_id, what]
    for order_id, user_id in orders:
        args += (order_id, user_id)
    applied = int(await GIVEBACK(redis, k.giveback(), args))
    return None if applied < 0 else applied


async def snapshot(redis: RedisClient, k: EventKeys) -> Snapshot:
    """Bucket ``k``'s stock and order counts, read at one moment."""
    reply = await SNAPSHOT(redis, k.snapshot(), ["snapshot"])
    if not reply:
        raise EventNotFound(k.event_id)
    return Snapshot(
        int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]), list(reply[4]), list(reply[5])
    )


async def ack(redis: RedisClient, k: EventKeys, entry_ids: Sequence[str], order_ids: Sequence[str]) -> int:
    """Acknowledge stored entries and forget their orders as queued (none: only trim); entries acknowledged."""
    return int(await ACK(redis, k.ack(), [keys.GROUP, "\n".join(entry_ids), "\n".join(order_ids)]))


async def dead_letter(
    redis: RedisClient, k: EventKeys, entry_id: str, reason: str, deliveries: int
) -> str | None:
    """Move a pending entry to the dead letters; the dead letter's entry id, or None if it was not pending."""
    dead_id = await DEADLETTER(redis, k.dead_letter(), [keys.GROUP, entry_id, reason, deliveries])
    return str(dead_id) if dead_id else None


async def requeue(redis: RedisClient, k: EventKeys, entry_id: str) -> str | None:
    """Move a dead letter back to its order stream; the new entry id, or None if there is no such dead letter."""
    new_id = await REQUEUE(redis, k.requeue(), [entry_id])
    return str(new_id) if new_id else None


def _refusal(script: Script, code: object, reply: Sequence[Any], event_id: int) -> Exception:
    refusal = REFUSALS.get(str(code))
    if refusal is None:
        return RuntimeError(f"{script.name} answered an unknown code {code!r}")
    return refusal.from_reply(event_id, reply)
