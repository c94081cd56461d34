from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.redis import RedisServer
from kit.component import Component
from kit.errors import Conflict
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route
from kit.schema import read_body, rule
from kit.settings import Settings
from peak.app import create_app
from tests.support import lifespan_client


@dataclasses.dataclass
class Review:
    rating: int = dataclasses.field(metadata=rule(min=1, max=5))
    text: str = dataclasses.field(metadata=rule(max_length=20))
    tags: list[str] = dataclasses.field(default_factory=list)


async def create_review(request: Request) -> Response:
    body = await read_body(request, Review)
    if body.text == "taken":
        raise Conflict("already reviewed", code="already_reviewed")
    return JSONResponse(dataclasses.asdict(body), status_code=201)


async def explode(request: Request) -> Response:
    raise RuntimeError("secret-internal-detail")


DEMO = Component(
    name="demo",
    routes=[
        route("/demo/reviews", create_review, methods=["POST"], summary="demo", body=Review),
        route("/demo/explode", explode, summary="always fails"),
    ],
)


@pytest.fixture
async def demo(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(settings, [DEMO])) as c:
        yield c


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return response.status_code, body["error"]["code"]


async def test_error_bodies(demo: httpx.AsyncClient) -> None:
    assert _error(await demo.get("/no/such/route")) == (404, "not_found")
    assert _error(await demo.delete("/healthz")) == (405, "method_not_allowed")
    assert _error(await demo.post("/demo/reviews", content=b"{not json")) == (400, "invalid_json")
    assert _error(await demo.post("/demo/reviews", content=b"[1, 2]")) == (422, "invalid_request")
    missing = await demo.post("/demo/reviews", json={"text": "ok"})
    assert _error(missing) == (422, "invalid_request")
    assert "rating" in missing.json()["error"]["message"]
    wrong = await demo.post("/demo/reviews", json={"rating": 9, "text": "ok"})
    assert _error(wrong) == (422, "invalid_request")
    assert wrong.json()["error"]["message"] == "field 'rating' must be from 1 to 5"
    typed = await demo.post("/demo/reviews", json={"rating": "5", "text": "ok"})
    assert "'rating' must be a whole number" in typed.json()["error"]["message"]
    nested = await demo.post("/demo/reviews", json={"rating": 5, "text": "ok", "tags": ["a", 3]})
    assert "'tags[1]' must be a string" in nested.json()["error"]["message"]
    assert _error(await demo.post("/demo/reviews", json={"rating": 2, "text": "taken"})) == (
        409,
        "already_reviewed",
    )
    ok = await demo.post("/demo/reviews", json={"rating": 5, "text": "great"})
    assert (ok.status_code, ok.json()) == (201, {"rating": 5, "text": "great", "tags": []})


async def test_unexpected_error_is_a_500_body_without_details(
    demo: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await demo.get("/demo/explode")
    assert _error(response) == (500, "internal_error")
    assert "secret-internal-detail" not in response.text
    assert "secret-internal-detail" in caplog.text


async def test_request_id_is_echoed_or_made(demo: httpx.AsyncClient) -> None:
    given = await demo.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await demo.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    other = await demo.get("/healthz")
    assert made.headers["x-request-id"] != other.headers["x-request-id"]
    assert made.headers["x-request-id"].isalnum() and len(made.headers["x-request-id"]) >= 17


async def test_access_log_is_json_and_never_holds_tokens(
    make_settings: object, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(PEAK_LOG_JSON="1", PEAK_ACCESS_LOG="1")  # type: ignore[operator]
    async with lifespan_client(create_app(settings, [DEMO])) as demo:
        await demo.get("/healthz?access_token=sekrit", headers={"Authorization": "Bearer sekrit-token"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"peak.access"' in line]
    assert lines, "no access log line"
    entry = lines[-1]
    assert entry["route"] == "/healthz" and entry["status"] == 200 and entry["method"] == "GET"
    assert entry["request_id"] and entry["duration_ms"] >= 0
    assert "sekrit" not in json.dumps(lines)


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert 'peak_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "peak_request_seconds_bucket" in text


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    app = create_app(Settings.from_env({}))
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert len(routes) >= 4
    for r in routes:
        assert isinstance(r, ApiRoute), f"{r.path} is not an ApiRoute and carries no description"
        path = r.path.replace(":path", "")
        assert path in document["paths"], f"{r.path} missing from /openapi.json"
        for method in r.methods or ():
            if method != "HEAD":
                operation = document["paths"][path][method.lower()]
                assert operation["summary"] and operation["responses"], (r.path, method)
                # What the kit itself may answer on any route: a body over the cap, an unexpected failure.
                assert {"413", "500"} <= set(operation["responses"]), (r.path, method)


async def test_readyz_follows_redis(make_settings: object, tmp_path: Path) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    try:
        settings = make_settings(PEAK_REDIS_URL=private.url)  # type: ignore[operator]
        async with lifespan_client(create_app(settings, [])) as c:
            assert (await c.get("/readyz")).status_code == 200
            private.stop()
            down = await c.get("/readyz")
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "not_ready"
            assert "redis" in down.json()["error"]["message"]
            assert down.json()["checks"]["postgres"] == "ok"
            private.start()
            assert (await c.get("/readyz")).status_code == 200
    finally:
        private.stop()
