"""degrade's Lua scripts (``degrade/lua/``), bound once: the KEYS each takes and what its reply means.

Keys come from ``degrade/keys.py``; the switch script's reply becomes a ``Change`` here, and a refusal meant for
ops a ``SwitchRefused`` here and nowhere else (the controller reads the status itself); a plan script's reply
becomes a ``PlanReply``, and its refusals the plan errors of ``degrade/errors.py`` in ``raise_for_plan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from degrade import keys
from degrade.errors import NotApplied, NotScheduled, SwitchRefused, UnknownPlan
from degrade.tiers import CORE_TIERS
from kit.errors import InvalidRequest
from kit.lua import EncodableT, Script
from kit.redis import RedisClient

__all__ = [
    "ALL",
    "PLAN_APPLY",
    "PLAN_EDIT",
    "SET",
    "Change",
    "PlanCall",
    "PlanReply",
    "PlanStatus",
    "SetRequest",
    "SetStatus",
    "plan_apply",
    "plan_edit",
    "raise_for_plan",
    "raise_unless_set",
    "set_field",
]

SET = Script.of("degrade", "set")
PLAN_EDIT = Script.of("degrade", "plan_edit")
PLAN_APPLY = Script.of("degrade", "plan_apply")

# What the component hands the kit to load at start.
ALL = (SET, PLAN_EDIT, PLAN_APPLY)

_PLAN_EDIT_KEYS = (keys.PLANS, keys.SCHEDULE, keys.AUDIT)
_PLAN_APPLY_KEYS = (keys.PLANS, keys.SCHEDULE, keys.SWITCHES, keys.AUDIT)
_CORE_TIERS = ",".join(sorted(CORE_TIERS))

_SET_KEYS = (keys.SWITCHES, keys.AUDIT, keys.PRESSURE)


class SetStatus(StrEnum):
    CHANGED = "changed"  # set, audited and published
    UNCHANGED = "unchanged"  # the field already held the value
    CONFLICT = "conflict"  # the compare-and-set found another value than expected
    TOO_SOON = "too_soon"  # the step since the last automatic change, or the dwell, is not over
    PRESSURE = "pressure"  # a process reported pressure within the quiet time


@dataclass(frozen=True)
class Change:
    status: SetStatus
    old: str
    new: str
    since_ms: int


@dataclass(frozen=True)
class SetRequest:
    """One field of a subsystem's switch to set: by ops (any value) or by the controller (a compare-and-set
    from ``expected``, at least ``step_s`` after the last automatic change, and a restore only after
    ``dwell_s`` shed and ``quiet_s`` without pressure anywhere)."""

    name: str
    field: str
    value: str
    reason: str
    who: str
    source: str
    expected: str = ""
    step_s: float = 0
    dwell_s: float = 0
    quiet_s: float = 0


async def set_field(redis: RedisClient, request: SetRequest, *, default: str, audit_max: int) -> Change:
    """Set the field (or say why not), audit and publish the change, in one step; ``default`` is the field's
    value while unset."""
    r = request
    status, old, new, since = await SET(
        redis,
        _SET_KEYS,
        [r.name, r.field, r.value, r.reason, r.who, r.source, r.expected, int(r.step_s * 1000),
         int(r.dwell_s * 1000), int(r.quiet_s * 1000), audit_max, keys.CHANNEL, default],
    )  # fmt: skip
    return Change(SetStatus(str(status)), str(old), str(new), int(since))


def raise_unless_set(change: Change, name: str) -> None:
    """For ops: SwitchRefused unless the switch now holds the value asked for."""
    if change.status not in (SetStatus.CHANGED, SetStatus.UNCHANGED):
        raise SwitchRefused(name, change.status.value)


class PlanStatus(StrEnum):
    CHANGED = "changed"  # put: stored, audited, announced
    UNCHANGED = "unchanged"  # put: the same description and changes were there
    DELETED = "deleted"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"
    NONE = "none"  # due: no plan is due
    REFUSED = "refused"  # due: scheduled without force, it would shed a core subsystem; dropped
    UNKNOWN = "unknown"  # no such plan
    TOO_MANY = "too_many"  # put: the plan limit is reached
    PAST = "past"  # schedule: the time is not after the Redis clock
    NOT_SCHEDULED = "not_scheduled"
    NOT_APPLIED = "not_applied"


@dataclass(frozen=True)
class PlanCall:
    """Who asks, why, and the call's id: a retried call carries the same id, and its script answers what the
    first one did."""

    who: str
    reason: str
    call_id: str
    audit_max: int


@dataclass(frozen=True)
class PlanReply:
    status: PlanStatus
    record: dict[str, Any] | None
    changed: list[str]
    overridden: list[str]
    # What the script published (a plan's switch changes), for this process's board at once; None: nothing.
    message: dict[str, Any] | None


def _names(text: object) -> list[str]:
    return [n for n in str(text).split(",") if n]


def _reply(raw: list[Any]) -> PlanReply:
    status, record = PlanStatus(str(raw[0])), str(raw[1])
    rest = [str(v) for v in raw[2:]] + [""] * (5 - len(raw))
    return PlanReply(
        status,
        orjson.loads(record) if record else None,
        _names(rest[0]),
        _names(rest[1]),
        orjson.loads(rest[2]) if rest[2] else None,
    )


async def plan_edit(
    redis: RedisClient, op: str, name: str, call: PlanCall, extra: list[EncodableT]
) -> PlanReply:
    """``put`` (extra: limit, description, changes text), ``delete``, ``schedule`` (extra: at ms, at ISO,
    force) or ``cancel`` (``degrade/lua/plan_edit.lua``)."""
    args: list[EncodableT] = [op, name, call.who, call.reason, call.call_id, call.audit_max, keys.CHANNEL]
    return _reply(await PLAN_EDIT(redis, _PLAN_EDIT_KEYS, [*args, *extra]))


async def plan_apply(
    redis: RedisClient, op: str, name: str, call: PlanCall, core_by_default: str
) -> PlanReply:
    """``apply``, ``rollback`` or ``due`` (``degrade/lua/plan_apply.lua``); ``core_by_default``: the subsystems
    core by their default tier "a,b" (the script reads the stored tiers of the others)."""
    args: list[EncodableT] = [
        op,
        name,
        call.who,
        call.reason,
        call.call_id,
        call.audit_max,
        keys.CHANNEL,
        core_by_default,
        _CORE_TIERS,
    ]
    return _reply(await PLAN_APPLY(redis, _PLAN_APPLY_KEYS, args))


def raise_for_plan(reply: PlanReply, name: str, *, limit: int = 0) -> dict[str, Any]:
    """The plan's record, or the error a refusal means for ops."""
    status = reply.status
    if status is PlanStatus.TOO_MANY:
        raise InvalidRequest(f"at most {limit} plans are kept: delete one first")
    if status is PlanStatus.UNKNOWN or reply.record is None:
        raise UnknownPlan(f"no plan {name!r}")
    if status is PlanStatus.PAST:
        raise InvalidRequest("field 'at' must be later than now on the Redis clock")
    if status is PlanStatus.NOT_SCHEDULED:
        raise NotScheduled(f"plan {name!r} is not scheduled")
    if status is PlanStatus.NOT_APPLIED:
        raise NotApplied(f"plan {name!r} is not applied: there is nothing to roll back")
    return reply.record
