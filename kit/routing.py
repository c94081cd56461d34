"""Routes that carry their own OpenAPI description and name their template for metrics and logs."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from kit.errors import ApiError, InvalidRequest, NotFound, error_response
from kit.starlette_private import get_route_path

__all__ = ["ApiRoute", "Doc", "SegmentRouter", "raw_header", "route"]

Endpoint = Callable[[Request], Awaitable[Response]]


def raw_header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (``name`` in lower case) from the scope's raw list. On hot paths this
    spares the Headers object that ``request.headers`` builds on every request."""
    key: bytes
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


@dataclass(frozen=True)
class Doc:
    summary: str
    body: type[Any] | None = None
    form: bool = False
    responses: Mapping[int, type[Any] | dict[str, Any] | None] = field(default_factory=dict)
    errors: Mapping[int, Sequence[str]] = field(default_factory=dict)
    auth: Sequence[str] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    tag: str = ""
    # The content type of a success answer that is not JSON (``/metrics``: Prometheus text).
    media_types: Mapping[int, str] = field(default_factory=dict)
    # The JSON Schema of a path, query or header parameter by name (default: any string), so that the
    # document says what the route accepts (``kit.params.ID_SCHEMA`` for ``path_int``).
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class ApiRoute(Route):
    """A route with its OpenAPI description whose errors are rendered right where they are raised.

    Rendering at the route (not in an outer middleware) lets every middleware see the real status of an
    answer, and spares each request the extra exception-handling layers Starlette would add.
    """

    def __init__(self, path: str, endpoint: Endpoint, *, methods: Sequence[str], doc: Doc) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.app = _endpoint_app(endpoint)
        self.doc = doc
        self._has_params = bool(self.param_convertors)
        self._query = frozenset(doc.query)
        # What a 405 answers in Allow: every method of this path, over all the routes that share it (the
        # router fills it in; GET and DELETE of one path are two routes).
        self.allow = ", ".join(sorted(self.methods or ()))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = HTTPException(405, headers={"Allow": self.allow})
            await error_response(allowed)(scope, receive, send)
            return
        refused = _bad_path(scope) if self._has_params else None
        if refused is None and self._query:
            refused = _bad_query(scope, self._query)
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Characters no path or query parameter may carry to a store (PostgreSQL refuses NUL; a lone surrogate
# cannot even be encoded): C0 controls, DEL and surrogates.
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPED_CONTROL = re.compile(rb"%(?:[01][0-9a-fA-F]|7[fF])")


def _bad_path(scope: Scope) -> ApiError | None:
    for value in scope["path_params"].values():
        # isprintable() is one C loop and true for every identifier; the regex only runs for the rest.
        if isinstance(value, str) and not value.isprintable() and _BAD_CHARS.search(value):
            return NotFound("no such resource")
    return None


def _bad_query(scope: Scope, names: frozenset[str]) -> ApiError | None:
    raw: bytes = scope["query_string"]
    if not raw or not _ESCAPED_CONTROL.search(raw):
        return None
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name in names and _BAD_CHARS.search(value):
            return InvalidRequest(f"query parameter '{name}' must not contain control characters")
    return None


def _endpoint_app(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await endpoint(Request(scope, receive, send))
        except (ApiError, HTTPException) as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    return app


def route(
    path: str,
    endpoint: Endpoint,
    *,
    methods: Sequence[str] = ("GET",),
    summary: str,
    tag: str = "",
    body: type[Any] | None = None,
    form: bool = False,
    responses: Mapping[int, type[Any] | dict[str, Any] | None] | None = None,
    errors: Mapping[int, Sequence[str]] | None = None,
    auth: Sequence[str] = (),
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    media_types: Mapping[int, str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> ApiRoute:
    doc = Doc(
        summary=summary,
        body=body,
        form=form,
        responses=responses or {200: None},
        errors=errors or {},
        auth=auth,
        query=query or {},
        headers=headers or {},
        tag=tag or path.strip("/").split("/")[0],
        media_types=media_types or {},
        params=params or {},
    )
    return ApiRoute(path, endpoint, methods=methods, doc=doc)


class SegmentRouter(Router):
    """A router that tries only the routes sharing the request path's first segment.

    Starlette tries every route in order; with ~40 routes a purchase was matched against ten regexes before
    its own (~13 % of its CPU in-process). Routes keep their order within a segment, and a route whose first
    segment is a parameter is tried for every segment, so the first full match is the one Starlette would pick.
    Anything else (405 answers, redirects, 404s, lifespan) goes through Starlette's own loop.
    """

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._by_segment: dict[str, list[BaseRoute]] = {}
        everywhere: list[BaseRoute] = []
        for r in routes:
            segment = _first_segment(r.path) if isinstance(r, Route) else "{"
            if "{" in segment:
                everywhere.append(r)
                for bucket in self._by_segment.values():
                    bucket.append(r)
            else:
                self._by_segment.setdefault(segment, list(everywhere)).append(r)
        self._everywhere = everywhere
        self._exact = _exact_paths(self._by_segment)
        methods: dict[str, set[str]] = {}
        for r in routes:
            if isinstance(r, ApiRoute):
                methods.setdefault(r.path, set()).update(r.methods or ())
        for r in routes:
            if isinstance(r, ApiRoute):
                r.allow = ", ".join(sorted(methods[r.path]))

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = get_route_path(scope)
            exact = self._exact.get((path, scope["method"]))
            candidates = (
                (exact,)
                if exact is not None
                else self._by_segment.get(_first_segment(path), self._everywhere)
            )
            for candidate in candidates:
                match, child_scope = candidate.matches(scope)
                if match is Match.FULL:
                    scope["router"] = self
                    scope["route"] = candidate
                    scope.update(child_scope)
                    await candidate.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await error_response(HTTPException(404))(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


def _exact_paths(by_segment: dict[str, list[BaseRoute]]) -> dict[tuple[str, str], BaseRoute]:
    """(path, method) -> route, for paths without parameters: the route Starlette's loop would pick first, so
    a request for one is matched against one regex, not every route before it in its segment."""
    exact: dict[tuple[str, str], BaseRoute] = {}
    for candidates in by_segment.values():
        for r in candidates:
            if not isinstance(r, Route) or "{" in r.path:
                continue
            for method in r.methods or ():
                for c in candidates:  # the first route, in order, whose regex takes the path and the method
                    if not isinstance(c, Route):
                        break
                    if c.path_regex.match(r.path) and (c.methods is None or method in c.methods):
                        exact.setdefault((r.path, method), c)
                        break
    return exact


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") and len(path) > 1 else ""
