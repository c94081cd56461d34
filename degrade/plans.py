"""Degradation plans: named sets of switch changes, stored in Redis, applied now or at a time on the Redis
clock, rolled back to exactly the modes they found; shared by the admin API, the CLI and the schedule loop.

A plan's record (``{degrade}:plans``, one JSON value per name) is only ever written by its two scripts
(``degrade/lua/plan_edit.lua``, ``plan_apply.lua``): its changes as ``reviews=shed,search=partial:30`` (sorted),
the schedule, and what the last apply found (``applied.previous``), which a rollback restores. Applied again
before a rollback, a plan keeps the modes it first found, so one rollback always goes back to before the plan.
A rollback restores every switch the plan set, including one someone changed since: the reply names those
(``overridden``) and the audit entry's ``old`` keeps what was overwritten.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from redis.exceptions import RedisError

from degrade import keys, store
from degrade.board import Board, iso_ms
from degrade.errors import ForceRequired, UnknownPlan, UnknownSubsystem
from degrade.ops import unreachable
from degrade.scripts import PlanCall, PlanReply, PlanStatus, plan_apply, plan_edit, raise_for_plan
from degrade.settings import DegradeSettings
from degrade.tiers import MODES, PERCENT_MAX, PERCENT_MIN, is_core, mode_value, parse_mode, shed_share
from kit.context import Context
from kit.errors import InvalidRequest
from kit.lua import EncodableT
from kit.redis import RedisClient

__all__ = [
    "AHEAD_MAX_S",
    "CHANGES_MAX",
    "PLANS_MAX",
    "apply_plan",
    "cancel_plan",
    "changes_text",
    "core_names",
    "delete_plan",
    "get_plan",
    "list_plans",
    "parse_changes",
    "put_plan",
    "render",
    "rollback_plan",
    "run_due",
]

log = logging.getLogger("peak.degrade")

PLANS_MAX = 64
CHANGES_MAX = 64
# A plan is scheduled for a sale's start: days ahead, not years.
AHEAD_MAX_S = 366 * 86400
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_changes(board: Board, raw: Mapping[str, Any]) -> dict[str, str]:
    """``{"reviews": "shed", "search": {"mode": "partial", "percent": 30}}`` as stored values by subsystem;
    422 for a malformed one, 404 ``unknown_subsystem`` for a name the board does not know."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("field 'changes' must be an object: subsystem -> mode")
    if not raw:
        raise InvalidRequest("field 'changes' must name at least one subsystem")
    if len(raw) > CHANGES_MAX:
        raise InvalidRequest(f"field 'changes' may name at most {CHANGES_MAX} subsystems")
    values: dict[str, str] = {}
    for name, spec in raw.items():
        if not NAME.fullmatch(name):
            raise InvalidRequest("field 'changes' names subsystems: 1 to 64 of A-Z, a-z, 0-9, _ . -")
        if name not in board.subsystems:
            raise UnknownSubsystem(f"no subsystem {name!r}; known: {', '.join(sorted(board.subsystems))}")
        values[name] = _value(name, spec)
    return values


def _value(name: str, spec: Any) -> str:
    what = f"field 'changes.{name}'"
    mode: Any
    percent: Any
    if isinstance(spec, str):
        mode, percent = spec, None
    elif isinstance(spec, dict):
        if set(spec) - {"mode", "percent"}:
            raise InvalidRequest(f"{what} takes only 'mode' and 'percent'")
        mode, percent = spec.get("mode"), spec.get("percent")
    else:
        raise InvalidRequest(f'{what} must be a mode or {{"mode": ..., "percent": ...}}')
    if mode not in MODES:
        raise InvalidRequest(f"{what} must be one of {', '.join(MODES)}")
    if mode == "partial":
        if (
            isinstance(percent, bool)
            or not isinstance(percent, int)
            or not PERCENT_MIN <= percent <= PERCENT_MAX
        ):
            raise InvalidRequest(f"{what}: mode partial needs 'percent', a whole number from 1 to 99")
    elif percent is not None:
        raise InvalidRequest(f"{what}: 'percent' goes only with mode partial")
    return mode_value(str(mode), percent)


def changes_text(values: Mapping[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in sorted(values.items()))


def _parse_text(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def _mode_json(value: str) -> dict[str, Any]:
    mode, percent = parse_mode(value)
    return {"mode": mode, "percent": percent}


def _iso(ms: Any) -> str | None:
    return iso_ms(int(ms)) if isinstance(ms, int | float) else None


def render(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as the API shows a plan."""
    scheduled = record.get("scheduled") or None
    applied = record.get("applied") or None
    rolled_back = record.get("rolled_back") or None
    return {
        "name": record["name"],
        "description": record.get("description", ""),
        "changes": {n: _mode_json(v) for n, v in _parse_text(str(record.get("changes", ""))).items()},
        "updated_at": _iso(record.get("updated_ms")),
        "updated_by": record.get("updated_by", ""),
        "scheduled_at": _iso(scheduled["at_ms"]) if scheduled else None,
        "schedule": None
        if not scheduled
        else {"at": _iso(scheduled["at_ms"]), "by": scheduled.get("by"), "reason": scheduled.get("reason"),
              "force": bool(scheduled.get("force"))},
        "applied": None
        if not applied
        else {
            "at": _iso(applied.get("at_ms")),
            "by": applied.get("by"),
            "reason": applied.get("reason"),
            "source": applied.get("source"),
            "previous": {n: _mode_json(v) for n, v in _parse_text(str(applied.get("previous", ""))).items()},
            "changed": [n for n in str(applied.get("changed", "")).split(",") if n],
        },
        "rolled_back": None
        if not rolled_back
        else {"at": _iso(rolled_back.get("at_ms")), "by": rolled_back.get("by"), "reason": rolled_back.get("reason")},
    }  # fmt: skip


def _decode(name: str, raw: str) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)
        return render(record) if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError):
        # Not what the plan scripts write (edited by hand): left out, rather than failing the whole list.
        log.warning("degrade: plan %r in %s is unreadable and left out", name, keys.PLANS)
        return None


async def list_plans(redis: RedisClient) -> list[dict[str, Any]]:
    stored: dict[str, str] = await redis.hgetall(keys.PLANS)  # type: ignore[assignment]
    plans = (_decode(name, raw) for name, raw in sorted(stored.items()))
    return [p for p in plans if p is not None]


async def get_plan(redis: RedisClient, name: str) -> dict[str, Any]:
    raw: str | None = await redis.hget(keys.PLANS, name)  # type: ignore[assignment]
    plan = _decode(name, raw) if raw is not None else None
    if plan is None:
        raise UnknownPlan(f"no plan {name!r}")
    return plan


def core_names(board: Board) -> list[str]:
    """Subsystems core by their tier now or by default: shedding one, wholly or partly, needs force."""
    return sorted(
        n
        for n in board.subsystems
        if is_core(board.get(n, "tier")) or is_core(board.subsystems[n].default_tier)
    )


def _refuse_without_force(board: Board, values: Mapping[str, str]) -> None:
    core = set(core_names(board))
    hit = sorted(n for n, v in values.items() if n in core and shed_share(v))
    if hit:
        raise ForceRequired(
            f"the plan sheds {', '.join(hit)}, core of the site; repeat with force to do it anyway"
        )


def _call(ctx: Context, who: str, reason: str) -> PlanCall:
    return PlanCall(who, reason, uuid.uuid4().hex, ctx.settings.of(DegradeSettings).audit_max)


async def put_plan(
    ctx: Context,
    board: Board,
    name: str,
    changes: Mapping[str, Any],
    *,
    description: str,
    reason: str,
    who: str,
) -> dict[str, Any]:
    values = parse_changes(board, changes)
    call = PlanCall(who, reason, "", ctx.settings.of(DegradeSettings).audit_max)
    try:
        reply = await plan_edit(ctx.redis, "put", name, call, [PLANS_MAX, description, changes_text(values)])
    except RedisError as exc:
        raise unreachable(exc) from None
    record = raise_for_plan(reply, name, limit=PLANS_MAX)
    if reply.status is PlanStatus.CHANGED:
        board.apply({"plans_changed": True})
    return render(record)


async def delete_plan(ctx: Context, board: Board, name: str, *, reason: str, who: str) -> dict[str, Any]:
    try:
        reply = await plan_edit(ctx.redis, "delete", name, _call(ctx, who, reason), [])
    except RedisError as exc:
        raise unreachable(exc) from None
    raise_for_plan(reply, name)
    board.apply({"plans_changed": True})
    return {"deleted": name}


async def apply_plan(
    ctx: Context, board: Board, name: str, *, reason: str, who: str, at: dt.datetime | None, force: bool
) -> dict[str, Any]:
    """Apply now (``at`` None) or schedule for ``at`` on the Redis clock."""
    call = _call(ctx, who, reason)
    try:
        # Judged on the stored switches, not on this process's copy of them (up to a resync old).
        board.replace(await store.load(ctx.redis))
        plan = await get_plan(ctx.redis, name)
        if not force:
            _refuse_without_force(
                board, {n: mode_value(c["mode"], c["percent"]) for n, c in plan["changes"].items()}
            )
        if at is None:
            reply = await plan_apply(ctx.redis, "apply", name, call, "")
        else:
            at_ms = int(at.timestamp() * 1000)
            if at_ms > time.time() * 1000 + AHEAD_MAX_S * 1000:
                raise InvalidRequest("field 'at' may be at most 366 days ahead")
            extra: list[EncodableT] = [at_ms, iso_ms(at_ms), "1" if force else "0"]
            reply = await plan_edit(ctx.redis, "schedule", name, call, extra)
    except RedisError as exc:
        raise unreachable(exc) from None
    record = raise_for_plan(reply, name)
    board.apply(reply.message or {"plans_changed": True})
    return {"plan": render(record), "status": reply.status.value, "changed": reply.changed}


async def rollback_plan(ctx: Context, board: Board, name: str, *, reason: str, who: str) -> dict[str, Any]:
    try:
        reply = await plan_apply(ctx.redis, "rollback", name, _call(ctx, who, reason), "")
    except RedisError as exc:
        raise unreachable(exc) from None
    record = raise_for_plan(reply, name)
    if reply.message:
        board.apply(reply.message)
    return {
        "plan": render(record),
        "status": reply.status.value,
        "changed": reply.changed,
        "overridden": reply.overridden,
    }


async def cancel_plan(ctx: Context, board: Board, name: str, *, reason: str, who: str) -> dict[str, Any]:
    try:
        reply = await plan_edit(ctx.redis, "cancel", name, _call(ctx, who, reason), [])
    except RedisError as exc:
        raise unreachable(exc) from None
    record = raise_for_plan(reply, name)
    board.apply({"plans_changed": True})
    return {"plan": render(record), "status": reply.status.value}


async def run_due(ctx: Context, board: Board) -> PlanReply:
    """Apply the plan whose time has come, if any (one cheap script call when none is due); safe when every
    process calls it at once: the script applies a due plan once. Raises when Redis cannot be reached."""
    call = PlanCall("", "", "", ctx.settings.of(DegradeSettings).audit_max)
    # Core by default from here; core by a tier changed since is judged by the script on the stored tiers, not
    # on this board (up to a resync old: a plan shedding a subsystem made core a moment ago is still refused).
    by_default = ",".join(sorted(n for n, s in board.subsystems.items() if is_core(s.default_tier)))
    reply = await plan_apply(ctx.redis, "due", "", call, by_default)
    if reply.message:
        board.apply(reply.message)
    name = reply.record["name"] if reply.record else ""
    if reply.status is PlanStatus.APPLIED:
        log.warning(
            "degrade: scheduled plan %s applied, changed %s", name, ", ".join(reply.changed) or "nothing"
        )
    elif reply.status is PlanStatus.REFUSED:
        board.apply({"plans_changed": True})
        log.warning(
            "degrade: scheduled plan %s not applied: it sheds core %s and was scheduled without force",
            name, ", ".join(reply.changed),
        )  # fmt: skip
    return reply
