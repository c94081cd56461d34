"""The invariants every sale scenario checks once its faults are over: what the shoppers were told against what
PostgreSQL and Redis hold after the order workers drained the event."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from loadtest.drill.scenario import Result
from loadtest.drill.stack import Api, Stack

__all__ = [
    "CLIENT_TIMEOUT_S", "FINAL", "IN_FLIGHT", "SERVER_BOUND_S", "Purchases", "answered_in_time", "audit", "buy", "client", "key_of", "recovery_s", "round_of",
    "until_answered",
]  # fmt: skip


@dataclass
class Purchases:
    """What the shoppers were told. Each shopper buys with one Idempotency-Key of its own."""

    acked: dict[str, str] = field(default_factory=dict)  # shopper's key -> the order id a 202 named
    statuses: Counter[str] = field(default_factory=Counter)  # "202", "503 unavailable", "timeout", ...
    # A 202 for a key that named another order id than an earlier 202 for the same key.
    changed: list[str] = field(default_factory=list)
    slowest_s: float = 0.0

    def unexpected(self, allowed: set[str]) -> int:
        return sum(n for status, n in self.statuses.items() if status not in allowed)

    def absorb(self, other: Purchases) -> None:
        """Count ``other``'s answers here too (a key acknowledged in both must name the same order)."""
        for key, order_id in other.acked.items():
            if self.acked.setdefault(key, order_id) != order_id:
                self.changed.append(key)
        self.statuses.update(other.statuses)
        self.changed += other.changed
        self.slowest_s = max(self.slowest_s, other.slowest_s)

    def summary(self) -> str:
        return ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))


# Answers that end a shopper's attempts; anything else (503, a broken connection) is tried again, same key.
FINAL = frozenset({"202", "202 replayed", "409 sold_out"})
# The shoppers' own timeout: no answer within it is a hang. Generous, since what the drill's one process adds
# on its side grows with the load it generates (a round of 1,000 purchases on the loaded 2-core VM: server at
# most 0.6 s, client up to 9 s); SERVER_BOUND_S is what the server must keep (its access log's times): a script
# call tries 4 times at most 5 s each (~21 s), plus the batch it waited for.
CLIENT_TIMEOUT_S = 60.0
SERVER_BOUND_S = 25.0


# Purchases in flight at once from the drill's one process. httpx's pool slows down badly with more (a round of
# 1,000 at once took 30 s in the client while the server had answered them all within 2.6 s).
IN_FLIGHT = 200


def client() -> httpx.AsyncClient:
    """The shoppers' HTTP client: a connection for each purchase in flight, CLIENT_TIMEOUT_S each answer."""
    return httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=httpx.Limits(max_connections=IN_FLIGHT + 16))


def key_of(shopper: int) -> str:
    return f"drill-key-{shopper}"


async def buy(
    http: httpx.AsyncClient, api: Api, event_id: int, shopper: dict[str, str], key: str, seen: Purchases
) -> str:
    """One purchase with ``key``, its answer recorded in ``seen``: "202", "202 replayed", "409 sold_out",
    "503 unavailable", "timeout", "connection error", ..."""
    started = time.monotonic()
    try:
        # httpx's timeout bounds each phase (connect, each read); the shopper's bounds the whole answer.
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            answer = await http.post(
                f"{api.url}/seckill/events/{event_id}/orders", headers={**shopper, "Idempotency-Key": key}
            )
    except (httpx.TimeoutException, TimeoutError):
        outcome = "timeout"
    except httpx.TransportError:
        outcome = "connection error"
    else:
        if answer.status_code == 202:
            body = answer.json()
            order_id = str(body["order_id"])
            if seen.acked.setdefault(key, order_id) != order_id:
                seen.changed.append(key)
            outcome = "202 replayed" if body.get("replayed") else "202"
        else:
            try:
                outcome = f"{answer.status_code} {answer.json()['error']['code']}"
            except (ValueError, KeyError, TypeError):
                outcome = f"{answer.status_code} ?"
    seen.slowest_s = max(seen.slowest_s, time.monotonic() - started)
    seen.statuses[outcome] += 1
    return outcome


async def round_of(
    http: httpx.AsyncClient, api: Api, event_id: int, shoppers: dict[int, dict[str, str]], seen: Purchases
) -> set[int]:
    """Every shopper of ``shoppers`` (index -> bearer headers) buys with its key, IN_FLIGHT at a time; those
    answered for good (202 or sold out)."""
    indexes = list(shoppers)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> str:
        async with gate:
            return await buy(http, api, event_id, shoppers[i], key_of(i), seen)

    outcomes = await asyncio.gather(*(one(i) for i in indexes))
    return {i for i, outcome in zip(indexes, outcomes, strict=True) if outcome in FINAL}


async def until_answered(
    http: httpx.AsyncClient,
    api: Api,
    event_id: int,
    shoppers: dict[int, dict[str, str]],
    seen: Purchases,
    *,
    timeout_s: float = 30.0,
) -> dict[int, dict[str, str]]:
    """Rounds of retries (same keys) until every shopper has a final answer or the timeout; those left."""
    pending = dict(shoppers)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for i in await round_of(http, api, event_id, pending, seen):
            del pending[i]
        if pending:
            await asyncio.sleep(0.2)
    return pending


async def recovery_s(
    http: httpx.AsyncClient,
    api: Api,
    event_id: int,
    shopper: dict[str, str],
    seen: Purchases,
    *,
    timeout_s: float = 30.0,
) -> float | None:
    """Seconds until a purchase (one new key of this shopper, tried again and again) is answered 202; None if
    not within the timeout. Its order counts in ``seen`` like the others."""
    started = time.monotonic()
    key = f"drill-probe-{started}"
    while time.monotonic() - started < timeout_s:
        if (await buy(http, api, event_id, shopper, key, seen)).startswith("202"):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


async def audit(
    stack: Stack,
    api: Api,
    event_id: int,
    stock: int,
    seen: Purchases,
    result: Result,
    *,
    drain_s: float = 60.0,
) -> None:
    """Drain the event (a worker must run), then check what the shoppers were told against PostgreSQL and Redis:
    every 202 is an order, no key made two, every order was told to its shopper, nothing oversold, reconcile
    clean. Adds the figures acknowledged, written, lost, duplicated, unacknowledged, oversold."""
    stats = await stack.drained(api, event_id, timeout_s=drain_s)
    orders = await stack.orders(event_id)
    user_of = dict(orders)
    acked_ids = set(seen.acked.values())
    lost = [o for o in acked_ids if o not in user_of]
    keys_per_user = Counter(user_of[o] for o in acked_ids if o in user_of)
    per_user = Counter(user_of.values())
    duplicated = sum(max(0, n - keys_per_user[user]) for user, n in per_user.items() if keys_per_user[user])
    unacknowledged = sum(1 for o in user_of if o not in acked_ids)
    oversold = max(0, len(orders) + int(stats["queued"]) + int(stats["dead_letters"]) - stock)
    clean, said = await asyncio.to_thread(stack.reconcile, event_id)
    result.figures.update(
        acknowledged=len(acked_ids), written=len(orders), lost=len(lost), duplicated=duplicated,
        unacknowledged=unacknowledged, oversold=oversold, dead_letters=int(stats["dead_letters"]),
    )  # fmt: skip
    result.check(
        "every order drained to PostgreSQL, no dead letter", stats["queued"] == 0 and stats["dead_letters"] == 0,
        f"queued {stats['queued']}, dead letters {stats['dead_letters']}",
    )  # fmt: skip
    result.check(
        "every 202 is an order in PostgreSQL (lost)", not lost, f"{len(lost)} of {len(acked_ids)} lost"
    )
    result.check("a retried key names the same order", not seen.changed, f"{len(seen.changed)} keys changed")
    result.check("no key made two orders (duplicated)", duplicated == 0, f"{duplicated} extra orders")
    result.check(
        "every order was told to its shopper after retries", unacknowledged == 0, f"{unacknowledged} not told"
    )
    result.check("not oversold", oversold == 0, f"{len(orders)} orders of {stock} in stock")
    result.check("reconcile clean", clean, said)


def answered_in_time(seen: Purchases, result: Result, allowed: frozenset[str], apis: Sequence[Api]) -> None:
    """No hang (every answer within the client's timeout, and within SERVER_BOUND_S by the servers' own
    times) and only the answers ``allowed`` (never a 500)."""
    server = sorted(t for api in apis for t in api.purchase_times_s())
    server_max = server[-1] if server else 0.0
    result.figures["answers"] = seen.summary()
    result.figures["slowest_answer_s"] = round(seen.slowest_s, 2)
    result.figures["server_p99_s"] = round(server[int(len(server) * 0.99)] if server else 0.0, 2)
    result.figures["server_max_s"] = round(server_max, 2)
    result.check(
        f"every purchase answered by the API within {SERVER_BOUND_S:g} s (its access log)",
        bool(server) and server_max < SERVER_BOUND_S,
        f"{len(server)} answers, slowest {server_max:.2f} s",
    )
    result.check(
        f"no shopper waited past its {CLIENT_TIMEOUT_S:g} s timeout (no hang)",
        seen.statuses["timeout"] == 0,
        f"slowest {seen.slowest_s:.2f} s seen by the drill's client, {seen.statuses['timeout']} timeouts",
    )
    odd = {status: n for status, n in seen.statuses.items() if status not in allowed}
    result.check(
        f"answers only {', '.join(sorted(allowed))}", not odd, ", ".join(f"{s}: {n}" for s, n in odd.items())
    )
