"""Routes that carry their own OpenAPI description and name their template for metrics and logs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["ApiRoute", "Doc", "route"]

ROUTE_KEY = "peak.route"


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


class ApiRoute(Route):
    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: Sequence[str], doc: Doc) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.doc = doc

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_KEY] = self.path
        await super().handle(scope, receive, send)


def route(
    path: str,
    endpoint: Callable[..., Any],
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
    )
    return ApiRoute(path, endpoint, methods=methods, doc=doc)
