"""The admin API: list and set switches, read the audit log, see every live process (plans: plan_routes.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from degrade import store
from degrade.board import Board
from degrade.ops import set_switch, unreachable
from degrade.service import Degrade
from degrade.tiers import PERCENT_MAX, PERCENT_MIN, mode_value
from kit.admins import AdminTokens
from kit.context import context_of
from kit.errors import Forbidden, InvalidRequest, Unauthorized
from kit.params import query_int, query_str
from kit.redis import RedisClient
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route
from kit.schema import read_body, rule

__all__ = ["ERRORS_ADMIN", "Authorizer", "SwitchChange", "admin_token_check", "path_name", "routes", "who_of"]

# Checks the caller is an admin and returns who they are (anything with ``username``, or a string);
# raises Unauthorized/Forbidden. The composition passes sso.client.require_admin; degrade never imports sso.
Authorizer = Callable[[Request], Awaitable[object]]

_AUDIT_MAX = 1000
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SINCE_MAX = 64
_WHO_MAX = 128
_FILTER_MAX = 128
ERRORS_ADMIN = {401: ["unauthenticated"], 403: ["forbidden"]}


@dataclass
class SwitchChange:
    reason: str = field(metadata=rule(min_length=1, max_length=500, description="why; goes to the audit log"))
    mode: Literal["open", "shed", "auto", "partial"] | None = None
    percent: int | None = field(
        default=None,
        metadata=rule(
            min=PERCENT_MIN, max=PERCENT_MAX,
            description="with mode partial (and only then): the share of the subsystem's requests shed, "
            "sticky per user",
        ),
    )  # fmt: skip
    tier: Literal["critical_plus", "critical", "sheddable_plus", "sheddable"] | None = None
    force: bool = field(
        default=False,
        metadata=rule(
            description="required to shed a core subsystem by hand, to give a core subsystem a non-core tier, "
            "or to let the controller shed a subsystem that is core by default"
        ),
    )


async def admin_token_check(request: Request) -> object:
    """The fallback authorizer: only an admin token bearer; who it is, is the token's name."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    name = AdminTokens.of(context_of(request)).name_for(token)
    if name is None:
        raise Forbidden("an admin credential is required")
    return name


def who_of(principal: object) -> str:
    """The person the audit names: an SSO admin's username, or the name of the admin token used."""
    who = str(getattr(principal, "username", None) or principal)
    return "".join(c for c in who if c.isprintable())[:_WHO_MAX] or "unknown"


def path_name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            "path parameter 'name' must be a subsystem name: 1 to 64 of A-Z, a-z, 0-9, _ . -"
        )
    return name


def _audit_query(request: Request) -> tuple[str | None, int]:
    since = query_str(request, "since", max_length=_SINCE_MAX)
    if since is not None and not since.isascii():
        raise InvalidRequest("query parameter 'since' must be an ISO 8601 time, epoch ms or an entry id")
    return since, query_int(request, "limit", default=100, low=1, high=_AUDIT_MAX)


_NEWEST_ONLY = ("name", "by", "from", "to", "before")


async def _newest(request: Request, redis: RedisClient) -> Response:
    """``order=newest``: filtered, paged with ``before`` (a filter reads at most store.AUDIT_SCAN_MAX entries
    per request and answers ``next`` where it stopped)."""
    raw = {p: query_str(request, p, max_length=_FILTER_MAX) for p in _NEWEST_ONLY}
    from_raw, to_raw = raw["from"], raw["to"]
    try:
        entries, next_id = await store.audit_page(
            redis,
            name=raw["name"],
            by=raw["by"],
            from_ms=None if from_raw is None else store.epoch_ms(from_raw, "query parameter 'from'"),
            to_ms=None if to_raw is None else store.epoch_ms(to_raw, "query parameter 'to'"),
            before=raw["before"],
            limit=query_int(request, "limit", default=100, low=1, high=_AUDIT_MAX),
        )
    except RedisError as exc:
        raise unreachable(exc) from None
    return JSONResponse({"entries": entries, "next": next_id})


def routes(authorize: Authorizer) -> list[ApiRoute]:
    async def list_switches(request: Request) -> Response:
        await authorize(request)
        ctx = context_of(request)
        board = ctx.get(Board)
        switches = [board.describe(name) for name in sorted(board.subsystems)]
        return JSONResponse({"switches": switches, **board.status()})

    async def put_switch(request: Request) -> Response:
        who = who_of(await authorize(request))
        ctx = context_of(request)
        name = path_name(request)
        body = await read_body(request, SwitchChange)
        if (body.mode == "partial") != (body.percent is not None):
            raise InvalidRequest("field 'percent' (1 to 99) goes with mode partial, and only with it")
        mode = None if body.mode is None else mode_value(body.mode, body.percent)
        result = await set_switch(
            ctx, ctx.get(Board), name,
            mode=mode, tier=body.tier, reason=body.reason, who=who, force=body.force,
        )  # fmt: skip
        return JSONResponse(result)

    async def read_audit(request: Request) -> Response:
        await authorize(request)
        order = request.query_params.get("order") or "oldest"
        if order == "newest":
            return await _newest(request, context_of(request).redis)
        if order != "oldest":
            raise InvalidRequest("query parameter 'order' must be newest or oldest")
        if any(request.query_params.get(p) for p in _NEWEST_ONLY):
            raise InvalidRequest(f"query parameters {', '.join(_NEWEST_ONLY)} go with order=newest")
        since, limit = _audit_query(request)
        try:
            entries = await store.audit(context_of(request).redis, since=since, limit=limit)
        except RedisError as exc:
            raise unreachable(exc) from None
        return JSONResponse({"entries": entries, "next": entries[-1]["id"] if entries else since})

    async def status(request: Request) -> Response:
        await authorize(request)
        ctx = context_of(request)
        body: dict[str, Any] = {"this_process": ctx.get(Degrade).status()}
        try:
            body["processes"] = await store.processes(ctx.redis)
        except RedisError as exc:
            body["processes"] = None
            body["processes_error"] = f"the switch store (Redis) cannot be reached: {exc}"
        return JSONResponse(body)

    admin = ["admin"]
    errors_admin = ERRORS_ADMIN
    return [
        route(
            "/degrade/switches", list_switches, summary="Every subsystem's mode, effective state, since and reason",
            auth=admin, errors=errors_admin, responses={200: {"type": "object"}},
        ),
        route(
            "/degrade/switches/{name}", put_switch, methods=["PUT"],
            summary="Set a subsystem's mode (open, shed, auto, partial with percent) and/or tier; audited",
            body=SwitchChange, auth=admin, responses={200: {"type": "object"}},
            errors={**errors_admin, 404: ["unknown_subsystem"], 409: ["force_required"],
                    422: ["invalid_request"], 503: ["store_unreachable"]},
        ),
        route(
            "/degrade/audit", read_audit,
            summary="Switch and plan changes by ops, the schedule and the controller; oldest first, or newest "
            "first with filters",
            auth=admin,
            query={"since": "oldest first: ISO time, epoch ms or an entry id (exclusive)", "limit": "1-1000",
                   "order": "newest (newest first, with the filters below) or oldest (the default)",
                   "name": "newest: a subsystem (plans touching it too) or a plan", "by": "newest: who",
                   "from": "newest: ISO time or epoch ms (inclusive)", "to": "newest: ISO time or epoch ms (inclusive)",
                   "before": "newest: an entry id, exclusive (the previous page's next)"},
            errors={**errors_admin, 422: ["invalid_request"], 503: ["store_unreachable"]},
            responses={200: {"type": "object"}},
        ),
        route(
            "/degrade/status", status, summary="Each live process's signals, modes and controller decisions",
            auth=admin, errors=errors_admin, responses={200: {"type": "object"}},
        ),
    ]  # fmt: skip
