"""`POST /cs/messages`, `GET /cs/messages` (the caller's conversation), `POST /cs/messages/{id}/reply` (agents)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

import sso.client
from customer_service import store
from degrade.client import fallback, shed_name
from kit.context import context_of
from kit.errors import InvalidRequest
from kit.params import query_str
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route
from kit.schema import read_body, rule

__all__ = ["NewMessage", "routes"]

QUEUED_NOTICE = "an agent will reply later"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)


@dataclass
class NewMessage:
    text: str = field(metadata=rule(min_length=1, max_length=4000))


_MESSAGE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "author": {"enum": ["shopper", "agent"]},
        "author_name": {"type": "string"},
        "text": {"type": "string"},
        "reply_to": {"type": ["string", "null"]},
        "created_at": {"type": "string"},
    },
}
_QUEUED = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "status": {"const": "queued"}, "message": {"type": "string"}},
}


@fallback
async def post_message(request: Request) -> Response:
    principal = await sso.client.authenticate(request)
    ctx = context_of(request)
    body = await read_body(request, NewMessage)
    if shed_name(request):
        queued = await store.enqueue(
            ctx, user_id=principal.user_id, username=principal.username, text=body.text
        )
        return JSONResponse(
            {"id": str(queued.id), "status": "queued", "message": QUEUED_NOTICE}, status_code=202
        )
    message = await store.add(ctx, user_id=principal.user_id, username=principal.username, text=body.text)
    return JSONResponse(message.as_json(), status_code=201)


def _uuid(raw: str, what: str) -> uuid.UUID:
    # uuid.UUID() also reads "{...}", "urn:uuid:..." and non-ASCII digits: only the canonical form here.
    if not _UUID.fullmatch(raw):
        raise InvalidRequest(
            f"{what} must be a message id (a UUID like 0f8fad5b-d9cb-469f-a165-70867728950e)"
        )
    return uuid.UUID(raw)


async def list_messages(request: Request) -> Response:
    principal = await sso.client.authenticate(request)
    raw_before = query_str(request, "before", max_length=36)
    before = None if raw_before is None else _uuid(raw_before, "query parameter 'before'")
    page = await store.conversation(context_of(request), principal.user_id, before=before)
    return JSONResponse(
        {
            "messages": [m.as_json() for m in page.messages],
            "next_before": str(page.next_before) if page.next_before else None,
        }
    )


async def reply(request: Request) -> Response:
    agent = await sso.client.require_admin(request)
    message_id = _uuid(str(request.path_params["message_id"]), "path parameter 'message_id'")
    body = await read_body(request, NewMessage)
    answer = await store.reply(context_of(request), message_id, agent=agent.username, text=body.text)
    return JSONResponse(answer.as_json(), status_code=201)


def routes() -> list[ApiRoute]:
    listing = {
        "type": "object",
        "properties": {
            "messages": {"type": "array", "items": _MESSAGE},
            "next_before": {"type": ["string", "null"], "description": "?before= of the page of older ones"},
        },
    }
    return [
        route(
            "/cs/messages", post_message, methods=["POST"], summary="write to support",
            body=NewMessage, auth=["bearer"], responses={201: _MESSAGE, 202: _QUEUED},
            errors={401: ["unauthenticated"], 422: ["invalid_request"], 429: ["rate_limited"],
                    503: ["inbox_full"]},
        ),
        route(
            "/cs/messages", list_messages, summary="the caller's conversation with support, newest page first",
            auth=["bearer"], query={"before": "next_before of the previous page"}, responses={200: listing},
            errors={401: ["unauthenticated"], 422: ["invalid_request"], 503: ["degraded"]},
        ),
        route(
            "/cs/messages/{message_id}/reply", reply, methods=["POST"], summary="an agent answers a message",
            body=NewMessage, auth=["admin"], responses={201: _MESSAGE},
            errors={401: ["unauthenticated"], 403: ["forbidden"], 404: ["message_not_found"],
                    422: ["invalid_request"], 503: ["degraded"]},
        ),
    ]  # fmt: skip
