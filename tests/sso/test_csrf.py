"""Cross-site request forgery (issue 15): cookie-authenticated state changes and the login only from the site
itself, bearer calls unaffected, and a Secure cookie whenever the public URL is https."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from kit.settings import Settings
from sso.csrf import CsrfGuard, origin_of
from tests.sso.conftest import PASSWORD, SITE, App, bearer, error_code, login, register, sso_app

EVIL = {"Origin": "https://evil.example"}


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("HTTPS://Shop.Example:443/sso/login?x=1", "https://shop.example"),
        ("http://shop.example:80", "http://shop.example"),
        ("https://shop.example:8443/", "https://shop.example:8443"),
        ("http://[::1]:8000/x", "http://[::1]:8000"),
        ("null", None),
        ("file:///etc/passwd", None),
        ("http://[::1", None),
        ("http://shop.example:99999", None),
        ("", None),
        ("javascript:alert(1)", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_the_cookie_is_secure_when_the_public_url_is_https() -> None:
    assert CsrfGuard("https://shop.example").secure_cookie
    assert not CsrfGuard("http://127.0.0.1:8000").secure_cookie
    assert CsrfGuard("http://127.0.0.1:8000", force_secure=True).secure_cookie


async def _cookie_login(app: App, username: str) -> dict[str, str]:
    await register(app.http, username)
    response = await app.http.post(
        "/sso/login", json={"username": username, "password": PASSWORD}, headers=SITE
    )
    assert response.status_code == 200 and "peak_sid" in app.http.cookies
    tokens: dict[str, str] = response.json()
    return tokens


CHANGES = [("POST", "/sso/logout"), ("DELETE", "/sso/sessions"), ("DELETE", "/sso/sessions/{sid}")]


@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_a_cookie_authenticated_change_from_elsewhere_is_refused(
    app: App, method: str, path: str
) -> None:
    tokens = await _cookie_login(app, "alice")
    target = path.format(sid=tokens["session_id"])
    for headers in (EVIL, {}, {"Origin": "null"}, {"Referer": "https://evil.example/page"},
                    {"Origin": "http://127.0.0.1:8000.evil.example"}, {"Origin": "https://127.0.0.1:8000"}):  # fmt: skip
        refused = await app.http.request(method, target, headers=headers)
        assert (refused.status_code, error_code(refused)) == (403, "csrf"), headers
        assert "set-cookie" not in refused.headers
    # Nothing changed: the session is alive.
    assert (await app.http.get("/sso/session")).status_code == 200
    # From the site (Origin, or failing that the Referer) it goes through.
    referer = {"Referer": "http://127.0.0.1:8000/account/sessions"}
    done = await app.http.request(method, target, headers=referer if method == "DELETE" else SITE)
    assert done.status_code == 204, done.text


async def test_a_password_change_by_cookie_needs_the_site(app: App) -> None:
    await _cookie_login(app, "alice")
    body = {"old_password": PASSWORD, "new_password": "another horse battery"}
    refused = await app.http.post("/sso/password", json=body, headers=EVIL)
    assert (refused.status_code, error_code(refused)) == (403, "csrf")
    assert (await app.http.post("/sso/password", json=body, headers=SITE)).status_code == 204


async def test_bearer_calls_are_not_affected(app: App) -> None:
    await register(app.http, "alice")
    phone, laptop = await login(app.http, "alice"), await login(app.http, "alice")
    app.http.cookies.clear()
    ended = await app.http.delete(f"/sso/sessions/{phone['session_id']}", headers={**bearer(laptop), **EVIL})
    assert ended.status_code == 204
    assert (await app.http.post("/sso/logout", headers={**bearer(laptop), **EVIL})).status_code == 204


@pytest.mark.parametrize("form", [False, True])
async def test_a_login_from_another_site_is_refused(app: App, form: bool) -> None:
    await register(app.http, "alice")
    credentials = {"username": "alice", "password": PASSWORD}
    as_body = {"data": credentials} if form else {"json": credentials}
    for headers in (EVIL, {"Origin": "null"}, {"Referer": "https://evil.example/"}):
        refused = await app.http.post("/sso/login", headers=headers, **as_body)  # type: ignore[arg-type]
        assert (refused.status_code, error_code(refused)) == (403, "csrf"), headers
        assert "set-cookie" not in refused.headers
    # From the site, and from clients that are no browser (no Origin, no Referer), as before.
    for headers in (SITE, {}):
        assert (await app.http.post("/sso/login", headers=headers, **as_body)).status_code == 200  # type: ignore[arg-type]


async def test_a_cross_site_login_opens_no_session(app: App) -> None:
    user = await register(app.http, "alice")
    await app.http.post("/sso/login", json={"username": "alice", "password": PASSWORD}, headers=EVIL)
    tokens = await login(app.http, "alice")
    listed = (await app.http.get("/sso/sessions", headers=bearer(tokens))).json()["sessions"]
    assert [s["id"] for s in listed] == [tokens["session_id"]], user


async def test_https_public_url_makes_the_cookies_secure(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_PUBLIC_URL="https://shop.example")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        site = {"Origin": "https://shop.example"}
        response = await app.http.post(
            "/sso/login", json={"username": "alice", "password": PASSWORD}, headers=site
        )
        assert response.status_code == 200
        session_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("peak_sid="))
        assert "Secure" in session_cookie and "HttpOnly" in session_cookie
        # The test client speaks http, so it would not send a Secure cookie: send it by hand.
        cookie = {"Cookie": session_cookie.split(";", 1)[0]}
        # An http page of the same host is another origin.
        out = await app.http.post("/sso/logout", headers={"Origin": "http://shop.example", **cookie})
        assert (out.status_code, error_code(out)) == (403, "csrf")
        logout = await app.http.post("/sso/logout", headers={**site, **cookie})
        assert logout.status_code == 204 and "Secure" in logout.headers["set-cookie"]


async def test_a_cookie_is_not_needed_to_be_refused_without_one(client: httpx.AsyncClient) -> None:
    # No cookie, no bearer: the answer is 401 as before, whatever the origin says.
    response = await client.post("/sso/logout", headers=EVIL)
    assert (response.status_code, error_code(response)) == (401, "unauthenticated")
