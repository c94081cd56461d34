"""The hop's own readers (sso/oidc/hop.py) against what they replace: parse_qsl then grouping, Starlette's
cookie parser, and Response with the security headers."""

from __future__ import annotations

import random
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from starlette.requests import Request
from starlette.responses import Response

from sso.oidc import hop as hop_module
from sso.oidc import request as request_module
from sso.oidc.hop import Redirect, grouped_query, location, session_cookie
from sso.oidc.page import SECURITY_HEADERS
from sso.oidc.request import PARAMETERS, grouped
from sso.tokens import OpaqueToken

_MAX = 64

HOSTILE = [
    "",
    "&",
    "&&&",
    "=",
    "==",
    "client_id",
    "client_id=",
    "client_id=&client_id=",
    "client_id=a&client_id=b",
    "client_id=a&client_id=a",
    "client_id=a;redirect_uri=b",
    "client_id=a;state=x&state=y",
    "state=a%zz",
    "state=%",
    "state=%2",
    "state=%%41",
    "state=%41%42",
    "state=%e2%82%ac",
    "state=%e2%82",
    "state=%ff%fe",
    "state=%00%1f%7f",
    "state=a+b+%2B",
    "client%5Fid=a&client_id=b",
    "client+id=a",
    "state==a=b",
    "state=\xe9\xe8",
    "st%61te=x",
    "%73tate=x&state=y",
    "scope=openid+profile&scope=",
    "nonce=" + "n" * 100_000,
    "&".join(["state=x"] * 63),
    "&".join(["state=x"] * 64),
    "&".join(["a"] * 65),
    "&" * 63,
    "&" * 64,
    "response_type=code&client_id=c&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=openid&state=s0",
]


def _before(query: str) -> dict[str, list[str]] | str:
    try:
        return grouped(parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX))
    except ValueError:
        return "refused"


def _now(query: str) -> dict[str, list[str]] | str:
    try:
        return grouped_query(query, PARAMETERS, _MAX)
    except ValueError:
        return "refused"


@pytest.mark.parametrize("query", HOSTILE)
def test_the_query_reads_as_parse_qsl_did(query: str) -> None:
    assert _now(query) == _before(query)


def test_random_queries_read_as_parse_qsl_did() -> None:
    rng = random.Random(19)
    alphabet = ["&", "=", ";", "+", "%", "%4", "%41", "%e2%82%ac", "%ZZ", "\xe9", " ", "a", "0", "state",
                "client_id", "nonce", "scope", "%73", "_", "%5F"]  # fmt: skip
    for _ in range(5000):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _now(query) == _before(query), query


def test_remembered_escapes_read_as_parse_qsl_did_and_stay_bounded() -> None:
    uri = "state=http%3A%2F%2F127.0.0.1%3A9%2Fcb&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb"
    for _ in range(3):  # the second and third read from memory
        assert _now(uri) == _before(uri)
    # A flood of made-up escaped values: every one still reads right, and memory stays bounded.
    for i in range(3 * hop_module._UNESCAPED_MAX):
        query = f"state=%41{i}%2F&nonce=%e2%82%ac{i}"
        assert _now(query) == _before(query)
        assert len(hop_module._UNESCAPED) <= hop_module._UNESCAPED_MAX
    long_value = "state=" + "%41" * hop_module._UNESCAPED_LONGEST
    assert _now(long_value) == _before(long_value)
    assert long_value[6:] not in hop_module._UNESCAPED


def test_a_huge_query_is_refused_as_before() -> None:
    query = "&".join(f"p{i}=v" for i in range(10_000))
    assert _now(query) == _before(query) == "refused"


def _cookies(*headers: str) -> dict[str, object]:
    return {"type": "http", "headers": [(b"cookie", h.encode("latin-1")) for h in headers]}


@pytest.mark.parametrize(
    "headers",
    [
        (),
        ("",),
        ("peak_sid=abc",),
        ("a=1; peak_sid=abc; b=2",),
        ("peak_sid=first; peak_sid=last",),
        ("peak_sid",),
        ("peak_sid; other=1",),
        ("xpeak_sid=abc",),
        ("peak_sidx=abc",),
        (" peak_sid = spaced ",),
        ('peak_sid="quoted"',),
        ('peak_sid="a\\073b"',),
        ('peak_sid="unterminated',),
        ("peak_sid=a=b",),
        ("peak_sid=\xe9",),
        ("other=1", "peak_sid=second-header"),
        ("peak_sid=one", "peak_sid=two"),
        (";;;peak_sid=x;;;",),
    ],
)
def test_the_session_cookie_reads_as_starlette_does(headers: tuple[str, ...]) -> None:
    scope = _cookies(*headers)
    expected = Request(scope).cookies.get("peak_sid") or ""
    assert session_cookie(scope, "peak_sid") == expected


@pytest.mark.parametrize(
    "uri", ["https://rp.example/cb", "https://rp.example/cb?x=1", "https://rp.example/cb?", "http://h:9/p#"]
)
@pytest.mark.parametrize(
    "params",
    [
        {"code": "u.s.secret-_", "state": "s0"},
        {"code": "c", "state": None},
        {"error": "login_required", "error_description": "no live sign-in", "state": "a b&c=d/é%"},
    ],
)
def test_the_redirect_is_the_response_it_replaces(uri: str, params: dict[str, str | None]) -> None:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    before = Response(status_code=302, headers={**SECURITY_HEADERS, "Location": f"{uri}{separator}{query}"})
    now = Redirect(location(uri, params))
    assert now.raw_headers == before.raw_headers
    assert (now.status_code, now.body) == (before.status_code, before.body)
    assert Redirect(location(uri, params), 303).status_code == 303


def _canonical_before(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@pytest.mark.parametrize(
    "user_id",
    [str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)), "0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b",
     "0B1E4B2C-9F0A-4D5E-8C7B-6A5F4E3D2C1B", "0b1e4b2c9f0a4d5e8c7b6a5f4e3d2c1b",
     "{0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b}", "urn:uuid:0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b",
     "0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b\n", " 0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b",
     "0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1", "0b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1g",
     "\u0660b1e4b2c-9f0a-4d5e-8c7b-6a5f4e3d2c1b",
     "0b1e4b2c-9f0a-4d5e-8c7b_6a5f4e3d2c1b", "x"],
)  # fmt: skip
def test_a_token_names_its_user_by_the_one_spelling_as_before(user_id: str) -> None:
    parsed = OpaqueToken.parse(f"{user_id}.session.secret")
    assert (parsed is not None) == _canonical_before(user_id)


def _canonical(found: dict[str, list[str]]) -> dict[str, str | None] | str:
    try:
        return {name: request_module._single(found, name) for name in request_module._READ_THEN}
    except ValueError as exc:
        return str(exc)


def _fast(found: dict[str, list[str]]) -> dict[str, str | None] | str:
    try:
        return request_module._then(found)
    except ValueError as exc:
        return str(exc)


def test_the_parameters_read_in_one_pass_as_one_by_one() -> None:
    """``_then`` (the hop's pass over the parameters given) answers what ``_single`` of each does, refusing
    the same first parameter: repeated, too long, control characters, non-ASCII, empty."""
    rng = random.Random(16)
    names = [*request_module._READ_THEN, "client_id", "redirect_uri"]
    values = ["", "code", "openid profile", "x" * 17, "x" * 1025, "a\x00b", "\x7f", "é", "é\x01", " ", "S256"]
    for _ in range(5000):
        found: dict[str, list[str]] = {}
        for name in rng.sample(names, rng.randint(0, len(names))):
            found[name] = [rng.choice(values) for _ in range(rng.choice((1, 1, 1, 2)))]
        assert _fast(found) == _canonical(found), found
