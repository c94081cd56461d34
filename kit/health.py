"""Kit routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from kit import migrations
from kit.context import Context, context_of
from kit.metrics import metrics_endpoint
from kit.openapi import openapi_document
from kit.redis import ping
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route

__all__ = ["routes"]

# Both stores are checked at once, each for at most this long: /readyz answers within about a second even
# with one of them unreachable in a way that answers nothing (a dropped route, a stopped host).
_CHECK_TIMEOUT_S = 1.0
log = logging.getLogger("peak")


class _MigrationsPending(Exception):
    pass


class _LastStates(dict[str, str]):
    """What this process's /readyz last found for each store: a change is logged, a repeat is not (a balancer
    probes every second or so, all through an outage)."""


def _last_states(ctx: Context) -> _LastStates:
    found = ctx.find(_LastStates)
    if found is None:
        found = _LastStates()
        ctx.put(found)
    return found


async def healthz(request: Request) -> Response:
    # Which instance and process answered: behind a balancer this shows where requests land.
    server = request.scope.get("server") or ("", 0)
    instance = f"{socket.gethostname()}:{server[1]}"
    body = {"status": "ok", "instance": instance, "pid": os.getpid()}
    return JSONResponse(body, headers={"X-Peak-Instance": instance})


async def readyz(request: Request) -> Response:
    ctx = context_of(request)
    checks: dict[str, str] = {}

    async def redis_check() -> None:
        await ping(ctx.redis)

    async def db_check() -> None:
        async with ctx.db.acquire(timeout=_CHECK_TIMEOUT_S) as conn:
            missing = await migrations.pending(conn, migrations.discover(ctx.components))
        if missing:
            names = ", ".join(f"{m.component}/{m.name}" for m in missing)
            raise _MigrationsPending(f"migrations not applied: {names}; run `peak migrate`")

    last = _last_states(ctx)

    async def check_one(name: str, check: Callable[[], Awaitable[None]]) -> None:
        why = ""
        try:
            await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except _MigrationsPending as exc:
            checks[name], why = "migrations pending", str(exc)
        except TimeoutError:
            checks[name], why = "timeout", f"{name} did not answer within {_CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # any failure is the answer here, not an error
            # The exception names hosts, ports and users: the log may have it, an anonymous client not.
            checks[name], why = "unreachable", f"{name} unreachable: {type(exc).__name__}: {exc}"
        if last.get(name, "ok") != checks[name]:
            if why:
                log.warning("readyz: %s", why)
            else:
                log.info("readyz: %s answers again", name)
        last[name] = checks[name]

    await asyncio.gather(check_one("redis", redis_check), check_one("postgres", db_check))
    checks = {name: checks[name] for name in ("redis", "postgres")}
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        body: dict[str, Any] = {
            "error": {"code": "not_ready", "message": f"not ready: {', '.join(failing)} failing"},
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "checks": checks})


async def openapi(request: Request) -> Response:
    document = openapi_document(request.app.routes, title="peak", version=_version())
    return JSONResponse(document)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peak")
    except PackageNotFoundError:
        return "0.0.0"


_CHECK_STATES = ["ok", "unreachable", "timeout", "migrations pending"]
_READY = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "checks": {
            "type": "object",
            "description": "each part's state: " + ", ".join(_CHECK_STATES),
            "additionalProperties": {"enum": _CHECK_STATES},
        },
    },
}
_ALIVE = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "instance": {"type": "string", "description": "host name and port of the API instance"},
        "pid": {"type": "integer", "description": "the server process that answered"},
    },
}


def routes() -> list[ApiRoute]:
    return [
        route("/healthz", healthz, summary="The process is alive", tag="ops", responses={200: _ALIVE}),
        route(
            "/readyz",
            readyz,
            summary="Redis and PostgreSQL answer and every migration is applied",
            tag="ops",
            responses={200: _READY},
            errors={503: ["not_ready"]},
        ),
        route(
            "/metrics",
            metrics_endpoint,
            summary="Prometheus metrics",
            tag="ops",
            responses={200: {"type": "string", "description": "Prometheus text format"}},
            media_types={200: CONTENT_TYPE_LATEST},
        ),
        route(
            "/openapi.json",
            openapi,
            summary="This OpenAPI 3.1 document",
            tag="ops",
            responses={200: {"type": "object"}},
        ),
    ]
