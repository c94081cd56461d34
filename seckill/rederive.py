"""Re-derivation of an event's Redis state from PostgreSQL, after a failover or a restart that may have lost writes.

Redis replication is asynchronous: a promoted replica (or a server restarted from its AOF) can lack the last
writes its predecessor acknowledged, so its stock is too high, users' counts too low, and order messages the
writers had already stored in PostgreSQL are gone from it. Each bucket's meta hash keeps ``gen``, the replication
id (``master_replid``) of the node that wrote it; a promoted replica or a restarted server has a new one, and
``reserve.lua``/``take.lua`` refuse every purchase there ("repairing", 503) until this module ran:

- Redis is read first (one atomic read per bucket: its queued and dead-lettered orders, give-backs, holds,
  counts), PostgreSQL second, so an order the writers move from the stream to PostgreSQL meanwhile is seen at
  least once and counted once (by order id).
- Per bucket: stock = total - (orders that took stock here: queued, dead-lettered or in PostgreSQL) + returned,
  where returned also takes the give-backs PostgreSQL calls done that Redis lost; the reservation counter is
  raised to the highest number PostgreSQL holds (a number is unique per event) and the numbers no order carries
  are kept as ``skipped`` for reconciliation; each user's held count is recomputed (one-bucket events: exactly;
  bucketed events: never lowered) and the per-user sequence raised to PostgreSQL's highest.
- The write checks that nothing moved since the read (give-backs, holds, an added stock) and sets ``gen`` to the
  node's id last: sales resume. Two processes repairing at once are safe: the second write finds ``gen`` moved.

``peak seckill reconcile --repair EVENT`` runs the same on demand (it first clears ``gen``, so purchases pause
for the few milliseconds the repair takes) and prints each field that changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kit.context import Context
from kit.lua import EncodableT
from kit.tasks import cancel_loops
from seckill import keys
from seckill.events import get_event_row
from seckill.scripts import REPAIR

__all__ = ["Change", "Repair", "Repairer", "disarm", "rederive", "repair_now"]

log = logging.getLogger("peak.seckill")

_ATTEMPTS = 5
_SHOWN_USERS = 10


@dataclass(frozen=True)
class Change:
    bucket: int
    name: str
    before: str
    after: str

    def __str__(self) -> str:
        if not self.before:  # a count of changes, not one field
            return f"bucket {self.bucket} {self.name}: {self.after}"
        return f"bucket {self.bucket} {self.name}: {self.before} -> {self.after}"


@dataclass
class Repair:
    event_id: int
    # False when the bucket was already repaired by someone else (or not in Redis).
    repaired: bool = False
    changes: list[Change] = field(default_factory=list)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


@dataclass(frozen=True)
class _Bucket:
    replid: str
    meta: dict[str, str]
    users: dict[str, str]
    seqs: dict[str, str]
    queued: dict[str, str]
    dead: dict[str, str]
    returned: set[str]
    quota_returned: set[str]
    holds: dict[str, str]
    taken: set[str]


def _read_keys(k: keys.EventKeys) -> list[str]:
    return [k.meta, k.users, k.seq, k.queued, k.dead_orders, k.returned, k.quota_returned, k.holds, k.taken]


async def _read(ctx: Context, k: keys.EventKeys) -> _Bucket | None:
    reply = await REPAIR(ctx.redis, _read_keys(k), ["read"])
    if not reply:
        return None
    return _Bucket(
        str(reply[0]), _pairs(reply[1]), _pairs(reply[2]), _pairs(reply[3]), _pairs(reply[4]),
        _pairs(reply[5]), set(reply[6]), set(reply[7]), _pairs(reply[8]), set(reply[9]),
    )  # fmt: skip


async def disarm(ctx: Context, event_id: int, buckets: int) -> None:
    """Make every bucket refuse purchases ("repairing") until it is re-derived."""
    for bucket in range(buckets):
        await REPAIR(ctx.redis, _read_keys(keys.event_keys(event_id, bucket)), ["disarm"])


async def repair_now(ctx: Context, event_id: int) -> Repair:
    """Re-derive every bucket of the event now (`peak seckill reconcile --repair`): purchases pause meanwhile."""
    event = await get_event_row(ctx, event_id)
    n = int(event["buckets"])
    nodes = [str(await ctx.redis.hget(keys.event_keys(event_id, b).meta, "gen") or "") for b in range(n)]
    await disarm(ctx, event_id, n)
    done = await rederive(ctx, event_id)
    # Which node wrote each bucket before (disarming cleared it): unchanged unless the node is another.
    kept = []
    for change in done.changes:
        if change.name == "node":
            before = nodes[change.bucket] or "(none)"
            if before == change.after:
                continue
            change = Change(change.bucket, "node", before, change.after)
        kept.append(change)
    done.changes = kept
    return done


async def rederive(ctx: Context, event_id: int, *, only_if_needed: bool = True) -> Repair:
    """Re-derive each bucket of the event that needs it (all of them with ``only_if_needed=False``)."""
    event = await get_event_row(ctx, event_id)
    n = int(event["buckets"])
    result = Repair(event_id)
    for _ in range(_ATTEMPTS):
        read = {b: await _read(ctx, keys.event_keys(event_id, b)) for b in range(n)}
        todo = {
            b: r
            for b, r in read.items()
            if r is not None and (r.meta.get("gen") != r.replid or not only_if_needed)
        }
        if not todo:
            return result
        # After the Redis reads: an order written meanwhile is in one or the other, or both (counted once).
        rows = await ctx.db.fetch(
            "SELECT order_id::text AS id, user_id, seq, rsv, bucket, home, status, giveback "
            "FROM seckill_orders WHERE event_id = $1",
            event_id,
        )
        moved = False
        for bucket, state in todo.items():
            changes = await _write(ctx, keys.event_keys(event_id, bucket), n, state, read, rows)
            if changes is None:
                moved = True
                continue
            result.repaired = True
            result.changes += changes
        if not moved:
            return result
        only_if_needed = True  # what moved was perhaps someone else's repair: redo what still needs it
    raise RuntimeError(f"event {event_id} kept changing during its re-derivation ({_ATTEMPTS} attempts)")


async def _write(
    ctx: Context,
    k: keys.EventKeys,
    n: int,
    state: _Bucket,
    read: dict[int, _Bucket | None],
    rows: list[Any],
) -> list[Change] | None:
    b = k.bucket
    mine = [r for r in rows if r["bucket"] == b]
    used = set(state.queued) | set(state.dead) | {r["id"] for r in mine}
    done = {r["id"] for r in mine if r["status"] == "cancelled" and r["giveback"] == "done"}
    add_returned = sorted(done - state.returned)
    returned = state.returned | done
    total = int(state.meta["total"])
    stock = total - len(used) + len(returned)
    reserved_before = int(state.meta.get("reserved", "0"))
    reserved = max(reserved_before, len(used), *(int(r["rsv"]) // n for r in mine))
    skipped = reserved - len(used)

    # The users whose home is this bucket: their held count and their sequence.
    quota_back = state.quota_returned if n > 1 else set()
    home_rows = [r for r in rows if r["home"] == b]
    quota_done = {r["id"] for r in home_rows if r["status"] == "cancelled" and r["giveback"] == "done"}
    add_quota = sorted(quota_done - state.returned - quota_back) if n > 1 else []
    given_back = state.returned | quota_back | quota_done
    owner: dict[str, str] = {r["id"]: r["user_id"] for r in home_rows}
    for other, other_state in read.items():
        if other_state is None:
            continue
        for order_id, user in [*other_state.queued.items(), *other_state.dead.items()]:
            # A taken order's home is another bucket's (its message says which): left to that bucket's count.
            if order_id not in other_state.taken and other == b:
                owner.setdefault(order_id, user)
    for order_id, packed in state.holds.items():
        owner.setdefault(order_id, packed.split("\n", 1)[0])
    held = Counter(user for order_id, user in owner.items() if order_id not in given_back)
    users_before = {u: int(c) for u, c in state.users.items()}
    if n == 1:
        users = {u: c for u, c in held.items() if c}
    else:
        users = {u: max(users_before.get(u, 0), c) for u, c in held.items()}
        users = {u: c for u, c in users.items() if c != users_before.get(u, 0)}
    seq_floor: dict[str, int] = {}
    for r in home_rows:
        seq_floor[r["user_id"]] = max(seq_floor.get(r["user_id"], 0), int(r["seq"]))
    for packed in state.holds.values():
        user, _, _, seq = packed.split("\n")
        seq_floor[user] = max(seq_floor.get(user, 0), int(seq))
    seqs = {u: s for u, s in seq_floor.items() if s > int(state.seqs.get(u, "0"))}

    args: list[EncodableT] = [
        "write", state.meta.get("gen", ""), state.meta["stock"], state.meta["total"],
        state.meta.get("reserved", "0"), len(state.returned), len(state.quota_returned), len(state.holds),
        stock, reserved, skipped, int(n == 1), len(users), len(seqs), len(add_returned),
    ]  # fmt: skip
    for user, count in users.items():
        args += (user, count)
    for user, top in seqs.items():
        args += (user, top)
    args += add_returned
    args += add_quota
    reply = await REPAIR(ctx.redis, _read_keys(k), args)
    if reply[0] != "ok":
        return None
    changes = [
        Change(b, name, str(before), str(after))
        for name, before, after in (
            ("stock", state.meta["stock"], stock),
            ("reserved", reserved_before, reserved),
            ("skipped", state.meta.get("skipped", "0"), skipped),
            ("returned", len(state.returned), len(returned)),
        )
        if str(before) != str(after)
    ]
    changed_users = sorted(u for u in set(users) | (set(users_before) if n == 1 else set())
                           if users.get(u, 0) != users_before.get(u, 0))  # fmt: skip
    for user in changed_users[:_SHOWN_USERS]:
        changes.append(Change(b, f"held by {user}", str(users_before.get(user, 0)), str(users.get(user, 0))))
    if len(changed_users) > _SHOWN_USERS:
        changes.append(Change(b, "users' held counts changed", "", str(len(changed_users))))
    if seqs:
        changes.append(Change(b, "users' sequences raised", "", str(len(seqs))))
    if add_quota:
        changes.append(Change(b, "quota give-backs recorded", "", str(len(add_quota))))
    changes.append(Change(b, "node", state.meta.get("gen", "") or "(none)", str(reply[1])))
    return changes


class Repairer:
    """Runs the re-derivation of an event in the background when purchases find it "repairing": at most one
    repair per event at a time in this process, one try per ``interval_s``."""

    def __init__(self, ctx: Context, interval_s: float) -> None:
        self._ctx = ctx
        self._interval_s = interval_s
        self._running: dict[int, asyncio.Task[None]] = {}

    def needed(self, event_id: int) -> None:
        if event_id not in self._running:
            task = asyncio.get_running_loop().create_task(self._repair(event_id))
            self._running[event_id] = task

    async def _repair(self, event_id: int) -> None:
        try:
            done = await rederive(self._ctx, event_id)
            if done.repaired:
                log.warning(
                    "event %d re-derived from PostgreSQL after a Redis failover or restart: %s",
                    event_id, "; ".join(str(c) for c in done.changes),
                )  # fmt: skip
        except Exception as exc:
            log.warning("re-deriving event %d failed (tried again on the next purchase): %s", event_id, exc)
        finally:
            await asyncio.sleep(self._interval_s)
            del self._running[event_id]

    async def aclose(self) -> None:
        await cancel_loops(self._running.values())
