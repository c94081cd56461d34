"""The console's routes: its static page (public: it shows the sign-in form) and ``/console/api/`` (admins).

Every answer under ``/console`` carries the security headers below, errors included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Message, Receive, Scope, Send

from console.assets import Asset, Assets
from console.hub import Hub
from console.settings import ConsoleSettings
from console.stream import EventStream
from degrade.routes import Authorizer
from kit.context import context_of
from kit.errors import NotFound
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route

__all__ = ["CSP", "SECURITY_HEADERS", "routes"]

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: Sequence[tuple[bytes, bytes]] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_ME_OUT = {
    "type": "object",
    "required": ["username", "roles"],
    "properties": {"username": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}},
}
_AUTH_ERRORS: Mapping[int, Sequence[str]] = {401: ["unauthenticated"], 403: ["forbidden", "csrf"]}


class ConsoleRoute(ApiRoute):
    """An ApiRoute whose every answer (405s and errors too) carries the console's security headers."""

    @classmethod
    def of(cls, base: ApiRoute) -> ConsoleRoute:
        return cls(base.path, base.endpoint, methods=sorted(base.methods or ()), doc=base.doc)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await super().handle(scope, receive, secured)


def _matches(etag: str, header: str | None) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


def _file(request: Request, asset: Asset) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if _matches(asset.etag, request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _who(principal: object) -> dict[str, Any]:
    if isinstance(principal, str):
        return {"username": principal, "roles": ["admin"]}
    roles = getattr(principal, "roles", None) or ("admin",)
    return {"username": str(getattr(principal, "username", "") or ""), "roles": sorted(str(r) for r in roles)}


def routes(authorize: Authorizer, assets: Assets | None = None) -> list[ConsoleRoute]:
    files = assets or Assets()

    async def to_folder(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=308)

    async def index(request: Request) -> Response:
        asset = files.get("index.html")
        if asset is None:
            raise NotFound("the console's page is not installed")
        return _file(request, asset)

    async def static(request: Request) -> Response:
        asset = files.get(str(request.path_params["path"]))
        if asset is None:
            raise NotFound("no such console file")
        return _file(request, asset)

    async def me(request: Request) -> Response:
        return JSONResponse(_who(await authorize(request)), headers={"Cache-Control": "no-store"})

    async def stream(request: Request) -> Response:
        await authorize(request)
        if request.method == "HEAD":
            return Response(media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        ctx = context_of(request)
        hub = ctx.get(Hub)
        sub = hub.subscribe()
        check_s = ctx.settings.of(ConsoleSettings).session_check_s
        return EventStream(hub, sub, lambda: authorize(request), check_s=check_s)

    file_doc = {200: None, 304: None}
    made = [
        route("/console", to_folder, summary="the console: redirects to /console/", responses={308: None}),
        route("/console/", index, summary="the console's page (public; it signs in with POST /sso/login)",
              responses=file_doc, errors={404: ["not_found"]}),
        route("/console/api/me", me, summary="who the console is signed in as", auth=["admin", "cookie"],
              responses={200: _ME_OUT}, errors={**_AUTH_ERRORS}),
        route("/console/api/stream", stream,
              summary="the console's live events (text/event-stream): a snapshot, then each change",
              auth=["admin", "cookie"], responses={200: {"type": "string"}},
              media_types={200: "text/event-stream"},
              errors={**_AUTH_ERRORS, 503: ["too_many_streams", "unavailable"]}),
        route("/console/{path:path}", static, summary="a file of the console's page (CSS, scripts)",
              responses=file_doc, errors={404: ["not_found"]}),
    ]  # fmt: skip
    return [ConsoleRoute.of(r) for r in made]
