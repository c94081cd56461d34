"""Issue 15 (the kit's part): bounded bodies, slow clients, content types, and no input that becomes a 500."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from devstack.processes import free_port
from devstack.redis import RedisServer
from kit.component import Component
from kit.errors import NotFound, error_response
from kit.middleware import STATUS_KEY
from kit.params import ID_SCHEMA, path_int, query_instant, query_int, query_str
from kit.responses import JSONResponse
from kit.routing import route
from kit.schema import read_body, rule
from kit.settings import Settings
from peak.app import create_app
from tests.conftest import Servers
from tests.support import kill_group, lifespan_client, start_peak, wait_http

MiB = 1024 * 1024
CALLS: list[str] = []


@dataclasses.dataclass
class Item:
    name: str = dataclasses.field(metadata=rule(max_length=64))
    count: int = 0
    ratio: float = 1.0
    price: int = dataclasses.field(default=0, metadata=rule(min=0))
    when: dt.datetime | None = None
    note: str | None = None
    extra: Any = None


@dataclasses.dataclass
class Patch:
    note: str | None = None


async def echo(request: Request) -> Response:
    CALLS.append("echo")
    body = await read_body(request, Item)
    when = body.when.isoformat() if body.when else None
    return JSONResponse({**dataclasses.asdict(body), "when": when})


async def login(request: Request) -> Response:
    body = await read_body(request, Item, allow_form=True)
    return JSONResponse({"name": body.name})


async def patch(request: Request) -> Response:
    body = await read_body(request, Patch)
    return JSONResponse({"note": body.note})


async def item(request: Request) -> Response:
    return JSONResponse({"id": path_int(request, "item_id")})


async def tag(request: Request) -> Response:
    return JSONResponse({"tag": request.path_params["tag"]})


async def search(request: Request) -> Response:
    since = query_instant(request, "since")
    return JSONResponse(
        {
            "q": query_str(request, "q"),
            "limit": query_int(request, "limit", default=10, low=1, high=100),
            "since": since.isoformat() if since else None,
        }
    )


LIMITS = Component(
    name="limits",
    routes=[
        route("/t/echo", echo, methods=["POST"], summary="echo", body=Item),
        route("/t/login", login, methods=["POST"], summary="form or JSON", body=Item, form=True),
        route("/t/patch", patch, methods=["PATCH"], summary="optional body", body=Patch),
        route("/t/items/{item_id}", item, summary="an item by id", params={"item_id": ID_SCHEMA}),
        route("/t/tags/{tag}", tag, summary="a tag"),
        route("/t/tags/{tag}", tag, methods=["DELETE"], summary="drop a tag"),
        route("/t/search", search, summary="search", query={"q": "text", "limit": "1-100", "since": "time"}),
    ],
)


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        return lifespan_client(create_app(make_settings(**env), [LIMITS]))

    return make


@pytest.fixture
async def app(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_declared_length_over_the_cap_is_413_before_the_app_runs(app: httpx.AsyncClient) -> None:
    CALLS.clear()
    big = b'{"name": "' + b"x" * (64 * 1024) + b'"}'
    response = await app.post("/t/echo", content=big, headers={"content-type": "application/json"})
    assert _code(response) == (413, "body_too_large")
    assert response.headers["connection"] == "close"
    assert CALLS == []
    # Also where no route reads a body, and with a length no body could have.
    assert _code(await app.post("/healthz", content=big)) == (413, "body_too_large")
    huge = await app.get("/healthz", headers={"content-length": "9" * 30})
    assert _code(huge) == (413, "body_too_large")
    assert (await app.post("/t/echo", json={"name": "fits"})).status_code == 200


async def test_a_chunked_body_stops_being_read_at_the_cap(make_client: Callable[..., Any]) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(50 * 1024):  # 50 MiB in 1 KiB chunks, if anyone read them all
            sent += 1024
            yield b" " * 1024

    async with make_client(PEAK_MAX_BODY_BYTES="4096") as c:
        response = await c.post("/t/echo", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert _code(response) == (413, "body_too_large")
    assert sent <= 4096 + 1024


async def test_a_trickling_body_is_cut_off_with_408(make_client: Callable[..., Any]) -> None:
    async def slow(n: int) -> AsyncIterator[bytes]:
        yield b'{"name": '
        await asyncio.sleep(30)
        yield b'"late"}'

    # A crowd of slow clients at once: each is cut off at the deadline, and a normal request still answers.
    async with make_client(PEAK_BODY_READ_TIMEOUT_S="0.5") as c:
        start = time.perf_counter()
        slow_calls = [
            c.post("/t/echo", content=slow(i), headers={"content-type": "application/json"})
            for i in range(300)
        ]
        fast = c.post("/t/echo", json={"name": "quick"})
        *answers, quick = await asyncio.gather(*slow_calls, fast)
        elapsed = time.perf_counter() - start
    assert quick.status_code == 200
    assert {_code(a) for a in answers} == {(408, "request_timeout")}
    assert answers[0].headers["connection"] == "close"
    assert elapsed < 10, elapsed


async def test_json_routes_refuse_other_content_types(app: httpx.AsyncClient) -> None:
    body = b'{"name": "a"}'
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        response = await app.post("/t/echo", content=body, headers={"content-type": content_type})
        assert _code(response) == (415, "unsupported_media_type"), content_type
    for content_type in (
        "application/json",
        "application/json; charset=UTF-8",
        "application/merge-patch+json",
    ):
        response = await app.post("/t/echo", content=body, headers={"content-type": content_type})
        assert response.status_code == 200, content_type
    # An optional body may be left out altogether; a form goes where the route takes one.
    assert (await app.patch("/t/patch")).json() == {"note": None}
    assert (await app.post("/t/login", data={"name": "ann"})).json() == {"name": "ann"}
    files: dict[str, Any] = {"name": (None, "ann"), "upload": ("a.txt", b"contents", "text/plain")}
    assert _code(await app.post("/t/login", files=files)) == (400, "invalid_form")
    fields = {f"f{i}": "v" for i in range(100)}
    assert _code(await app.post("/t/login", data={"name": "ann", **fields})) == (400, "invalid_form")
    bad = await app.post("/t/login", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert _code(bad) == (400, "invalid_form")


async def test_an_urlencoded_form_is_read_strictly(app: httpx.AsyncClient) -> None:
    async def post(body: bytes) -> httpx.Response:
        return await app.post(
            "/t/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )

    ok = await post(b"name=J%C3%BCrgen+K&note=")
    assert ok.json() == {"name": "Jürgen K"}
    assert (await post("name=Jürgen".encode())).json() == {"name": "Jürgen"}  # raw UTF-8 is taken as sent
    # A field sent twice: which one counts would be the server's guess (RFC 6749 3.1: never send one twice).
    twice = await post(b"name=ann&name=bob")
    assert _code(twice) == (400, "invalid_form") and "'name'" in twice.json()["error"]["message"]
    for not_utf8 in (b"name=%FF%FE", b"name=\xff"):
        refused = await post(not_utf8)
        assert _code(refused) == (400, "invalid_form") and "UTF-8" in refused.json()["error"]["message"]
    many = await post(b"&".join(b"f%d=v" % i for i in range(65)) + b"&name=ann")
    assert _code(many) == (400, "invalid_form") and "64" in many.json()["error"]["message"]
    assert (await post(b"&".join(b"f%d=v" % i for i in range(63)) + b"&name=ann")).json() == {"name": "ann"}


async def test_strings_refuse_control_characters(app: httpx.AsyncClient) -> None:
    for bad in ("a\x00b", "\x1b[31m", "a\x0bb", "\x7f\x00"):
        response = await app.post("/t/echo", json={"name": bad})
        assert _code(response) == (422, "invalid_request"), bad
        assert "'name'" in response.json()["error"]["message"]
    nested = await app.post("/t/echo", json={"name": "a", "extra": {"k": [1, {"\x00": "v"}]}})
    assert "'extra'" in nested.json()["error"]["message"]
    form = await app.post(
        "/t/login", content=b"name=a%00b", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert _code(form) == (422, "invalid_request")
    ok = await app.post("/t/echo", json={"name": "tab\tnew\nline\r", "note": "ünïcödé ✓"})
    assert ok.status_code == 200 and ok.json()["name"] == "tab\tnew\nline\r"
    deep = b'{"name": "a", "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = await app.post("/t/echo", content=deep, headers={"content-type": "application/json"})
    assert _code(response) == (422, "invalid_request")
    assert "32 levels" in response.json()["error"]["message"]


async def test_numbers_are_bounded_and_dates_in_range(app: httpx.AsyncClient) -> None:
    for value in (2**63, -(2**63) - 1, 18446744073709551615):
        response = await app.post("/t/echo", json={"name": "a", "count": value})
        assert _code(response) == (422, "invalid_request"), value
    assert (await app.post("/t/echo", json={"name": "a", "count": 2**63 - 1})).status_code == 200
    assert _code(await app.post("/t/echo", json={"name": "a", "count": True})) == (422, "invalid_request")
    assert _code(await app.post("/t/echo", json={"name": "a", "price": -1})) == (422, "invalid_request")
    big = await app.post("/t/echo", json={"name": "a", "price": 2**63})
    assert "'price'" in big.json()["error"]["message"]
    for when in (
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1969-12-31T23:59:59Z",
        "2026-11-11",
        "²",
    ):
        response = await app.post("/t/echo", json={"name": "a", "when": when})
        assert _code(response) == (422, "invalid_request"), when
        assert "'when'" in response.json()["error"]["message"]
    ok = await app.post("/t/echo", json={"name": "a", "when": "2026-11-11T08:00:00+08:00"})
    assert ok.json()["when"] == "2026-11-11T00:00:00+00:00"


async def test_path_and_query_parameters(app: httpx.AsyncClient) -> None:
    assert (await app.get("/t/items/42")).json() == {"id": 42}
    for raw in ("%C2%B2", "%D9%A3", "1" * 19, "-1", "1e3", "%00"):
        assert _code(await app.get(f"/t/items/{raw}")) == (404, "not_found"), raw
    assert _code(await app.get("/t/tags/a%00b")) == (404, "not_found")
    assert (await app.get("/t/tags/a%ED%A0%80b")).status_code in (200, 404)
    assert (await app.get("/t/tags/caf%C3%A9")).json() == {"tag": "café"}
    for query in ("limit=%C2%B2", "limit=0", "limit=101", "limit=" + "9" * 40, "q=a%00b", "since=nope",
                  "since=0001-01-01T00:00:00%2B01:00", "since=a%1Fb"):  # fmt: skip
        response = await app.get(f"/t/search?{query}")
        assert _code(response) == (422, "invalid_request"), query
    ok = await app.get("/t/search?q=shoes&limit=5&since=2026-11-11T00:00:00Z")
    assert ok.json() == {"q": "shoes", "limit": 5, "since": "2026-11-11T00:00:00+00:00"}


async def test_a_lone_surrogate_in_a_path_is_404(app: httpx.AsyncClient) -> None:
    # httpx (like granian) decodes paths with replacement characters; a server that does not could hand
    # the app a lone surrogate, which neither PostgreSQL nor orjson can encode.
    answers: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        answers.append(message)

    scope = {"type": "http", "method": "GET", "path": "/t/tags/a\ud800b", "raw_path": b"/t/tags/a",
             "query_string": b"", "headers": [], "root_path": "", "scheme": "http", "state": {}}  # fmt: skip
    await create_app(Settings.from_env({}), [LIMITS])(scope, receive, send)
    assert answers[0]["status"] == 404
    # And an error message that quotes one still renders.
    quoted = error_response(NotFound("no such event: a\ud800b"))
    assert json.loads(bytes(quoted.body))["error"]["message"] == "no such event: a?b"


async def test_a_client_gone_mid_body_is_no_500(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    messages = iter(
        [{"type": "http.request", "body": b'{"na', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[Any] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    app = create_app(make_settings(), [LIMITS])
    async with lifespan_client(app):
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/t/echo", "raw_path": b"/t/echo", "query_string": b"",
                 "headers": [(b"content-length", b"100"), (b"content-type", b"application/json")],
                 "root_path": "", "scheme": "http", "state": {}}  # fmt: skip
        with caplog.at_level(logging.ERROR):
            await app(scope, receive, send)
    assert sent == [] and scope[STATUS_KEY] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_405_names_every_method_of_the_path(app: httpx.AsyncClient) -> None:
    response = await app.request("OPTIONS", "/t/tags/x")
    assert _code(response) == (405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD"


async def test_issue_reproductions_on_the_whole_app(client: httpx.AsyncClient) -> None:
    nul = await client.post("/sso/login", json={"username": "ann\x00", "password": "x" * 12})
    assert _code(nul) == (422, "invalid_request")
    assert "'username'" in nul.json()["error"]["message"]
    form = await client.post("/sso/login", data={"username": "ann\x00", "password": "x" * 12})
    assert _code(form) == (422, "invalid_request")
    cross_site = await client.post(
        "/sso/users",
        content=b'{"username": "eve", "password": "0123456789abcdef"}',
        headers={"content-type": "text/plain"},
    )
    assert _code(cross_site) == (415, "unsupported_media_type")
    big = await client.post(
        "/sso/login", content=b"x" * (50 * MiB), headers={"content-type": "application/json"}
    )
    assert _code(big) == (413, "body_too_large")
    assert (await client.get("/seckill/events/%C2%B2")).status_code == 404


async def test_openapi_lists_what_the_kit_answers(app: httpx.AsyncClient) -> None:
    paths = (await app.get("/openapi.json")).json()["paths"]
    echo_op = paths["/t/echo"]["post"]
    assert {"400", "408", "413", "415", "422", "500"} <= set(echo_op["responses"])
    assert echo_op["requestBody"]["required"] is True
    assert paths["/t/patch"]["patch"]["requestBody"]["required"] is False
    assert set(paths["/t/login"]["post"]["requestBody"]["content"]) == {
        "application/json", "application/x-www-form-urlencoded", "multipart/form-data"
    }  # fmt: skip
    assert "invalid_form" in paths["/t/login"]["post"]["responses"]["400"]["description"]
    assert "404" in paths["/t/items/{item_id}"]["get"]["responses"]
    assert paths["/t/items/{item_id}"]["get"]["parameters"][0]["schema"] == ID_SCHEMA
    assert "422" in paths["/t/search"]["get"]["responses"]
    assert "404" not in paths["/healthz"]["get"]["responses"]
    props = echo_op["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["count"]["maximum"] == 2**63 - 1 and props["price"]["minimum"] == 0
    assert props["when"]["type"] == ["string", "null"] and props["when"]["format"] == "date-time"
    assert "pattern" in props["name"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [(await app.get("/metrics")).headers["content-type"]]


async def test_readyz_names_the_part_without_exception_text(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    port = private.url.rsplit(":", 1)[1].split("/")[0]
    try:
        settings = make_settings(PEAK_REDIS_URL=private.url)
        async with lifespan_client(create_app(settings, [])) as c:
            private.stop()
            down = await c.get("/readyz")
    finally:
        private.stop()
    assert down.status_code == 503
    assert down.json()["checks"] == {"redis": "unreachable", "postgres": "ok"}
    assert port not in down.text and "127.0.0.1" not in down.text and "Error" not in down.text


async def _slow_client(port: int, deadline_s: float) -> tuple[bytes, float]:
    """A slowloris body over TCP: a declared 1000 bytes, one a quarter second. The answer's head, and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(
        b"POST /sso/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    answer = b""
    try:
        while time.monotonic() - start < deadline_s and b"\r\n\r\n" not in answer:
            writer.write(b" ")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.25)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        writer.close()
    return answer, time.monotonic() - start


@pytest.mark.slow
async def test_slow_and_large_bodies_against_the_real_server(servers: Servers, tmp_path: Path) -> None:
    """granian in front: 100 slowloris bodies at once are each cut off at the deadline while the server
    answers others at once, and a declared 50 MB body is refused unread."""
    port = free_port()
    env = {**servers.env(), "PEAK_PORT": str(port), "PEAK_WORKERS": "1", "PEAK_BODY_READ_TIMEOUT_S": "1"}
    proc = start_peak("serve", env=env, log=tmp_path / "serve.log")
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /sso/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"body_too_large" in head
        slow = [asyncio.create_task(_slow_client(port, 8)) for _ in range(100)]
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            started = time.monotonic()
            assert (await c.get("/healthz")).status_code == 200
            assert time.monotonic() - started < 1.0
        answers = await asyncio.gather(*slow)
    finally:
        kill_group(proc)
    assert all(a.startswith(b"HTTP/1.1 408") for a, _ in answers), {a[:40] for a, _ in answers}
    assert max(t for _, t in answers) < 4, max(t for _, t in answers)
