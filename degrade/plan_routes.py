"""The admin API of degradation plans (degrade/plans.py): list, show, edit, delete, apply now or at a time,
roll back, cancel a schedule."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from degrade import plans
from degrade.board import Board
from degrade.ops import unreachable
from degrade.routes import ERRORS_ADMIN, Authorizer, path_name, who_of
from kit.context import context_of
from kit.params import query_str
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route
from kit.schema import read_body, rule

__all__ = ["PlanApply", "PlanEdit", "PlanReason", "routes"]

_REASON = rule(min_length=1, max_length=500, description="why; goes to the audit log")


@dataclass
class PlanEdit:
    changes: dict[str, Any] = field(
        metadata=rule(
            description='subsystem -> "open", "shed", "auto" or {"mode": "partial", "percent": 1-99}; '
            "1 to 64 of them"
        )
    )
    reason: str = field(metadata=_REASON)
    description: str = field(default="", metadata=rule(max_length=500, description="what the plan is for"))


@dataclass
class PlanApply:
    reason: str = field(metadata=_REASON)
    at: dt.datetime | None = field(
        default=None,
        metadata=rule(
            description="apply then (Redis clock; later than now, at most 366 days ahead); null: now"
        ),
    )
    force: bool = field(
        default=False, metadata=rule(description="required when the plan sheds a core subsystem, even partly")
    )


@dataclass
class PlanReason:
    reason: str = field(metadata=_REASON)


def _plan_name(request: Request) -> str:
    return path_name(request)


def routes(authorize: Authorizer) -> list[ApiRoute]:
    async def list_plans(request: Request) -> Response:
        await authorize(request)
        try:
            found = await plans.list_plans(context_of(request).redis)
        except RedisError as exc:
            raise unreachable(exc) from None
        return JSONResponse({"plans": found})

    async def get_plan(request: Request) -> Response:
        await authorize(request)
        name = _plan_name(request)
        try:
            return JSONResponse(await plans.get_plan(context_of(request).redis, name))
        except RedisError as exc:
            raise unreachable(exc) from None

    async def put_plan(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = _plan_name(request)
        body = await read_body(request, PlanEdit)
        plan = await plans.put_plan(
            ctx, ctx.get(Board), name, body.changes, description=body.description, reason=body.reason, who=who
        )
        return JSONResponse(plan)

    async def delete_plan(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = _plan_name(request)
        reason = query_str(request, "reason", max_length=500) or "deleted"
        return JSONResponse(await plans.delete_plan(ctx, ctx.get(Board), name, reason=reason, who=who))

    async def apply_plan(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = _plan_name(request)
        body = await read_body(request, PlanApply)
        result = await plans.apply_plan(
            ctx, ctx.get(Board), name, reason=body.reason, who=who, at=body.at, force=body.force
        )
        return JSONResponse(result)

    async def rollback_plan(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = _plan_name(request)
        body = await read_body(request, PlanReason)
        return JSONResponse(await plans.rollback_plan(ctx, ctx.get(Board), name, reason=body.reason, who=who))

    async def cancel_plan(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = _plan_name(request)
        body = await read_body(request, PlanReason)
        return JSONResponse(await plans.cancel_plan(ctx, ctx.get(Board), name, reason=body.reason, who=who))

    admin = ["admin"]
    obj = {200: {"type": "object"}}
    one = {**ERRORS_ADMIN, 404: ["unknown_plan"], 422: ["invalid_request"], 503: ["store_unreachable"]}
    path = "/degrade/plans/{name}"
    return [
        route("/degrade/plans", list_plans, summary="Every degradation plan, by name", auth=admin,
              errors={**ERRORS_ADMIN, 503: ["store_unreachable"]}, responses=obj),
        route(path, get_plan, summary="One degradation plan", auth=admin, errors=one, responses=obj),
        route(path, put_plan, methods=["PUT"], summary="Create or replace a plan (a named set of switch changes)",
              body=PlanEdit, auth=admin, responses=obj,
              errors={**ERRORS_ADMIN, 404: ["unknown_subsystem"], 422: ["invalid_request"],
                      503: ["store_unreachable"]}),
        route(path, delete_plan, methods=["DELETE"], summary="Delete a plan (and its schedule); audited",
              auth=admin, query={"reason": "why (optional; goes to the audit log)"}, errors=one, responses=obj),
        route(f"{path}/apply", apply_plan, methods=["POST"],
              summary="Apply a plan now (every switch in one step, the previous modes recorded) or at a time",
              body=PlanApply, auth=admin, responses=obj, errors={**one, 409: ["force_required"]}),
        route(f"{path}/rollback", rollback_plan, methods=["POST"],
              summary="Restore exactly the modes the plan's apply found", body=PlanReason, auth=admin,
              responses=obj, errors={**one, 409: ["not_applied"]}),
        route(f"{path}/cancel", cancel_plan, methods=["POST"], summary="Drop a plan's schedule",
              body=PlanReason, auth=admin, responses=obj, errors={**one, 409: ["not_scheduled"]}),
    ]  # fmt: skip
