"""GET /sso/authorize and the sign-in page (issue 19, area A): the single sign-on hop, the page, prompt and
max_age, RFC 6749 4.1.2.1's two kinds of refusal, hostile inputs, CSRF on the form and its throttling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest

from kit.settings import Settings
from loadtest.faultproxy import FaultProxy
from sso import code_scripts, keys
from sso.oidc.forms import SigninForms
from sso.service import Sso
from sso.tokens import OpaqueToken
from tests.conftest import TEST_REDIS, Servers
from tests.sso.conftest import PASSWORD, SITE, App, error_code, register, sso_app
from tests.sso.oidc_support import (
    PAY,
    SHOP,
    add_client,
    authorize,
    form_of,
    not_redirected,
    params,
    redirected,
)

# The in-process client's address, trusted as a balancer so that a test can speak for any network.
FROM_ANYWHERE = {"PEAK_TRUSTED_PROXIES": "10.1.2.3"}


async def _cookie(app: App, username: str) -> str:
    """Register and log in by the API; the peak_sid cookie's value (left in the client's jar)."""
    await register(app.http, username)
    response = await app.http.post(
        "/sso/login", json={"username": username, "password": PASSWORD}, headers=SITE
    )
    assert response.status_code == 200, response.text
    return str(app.http.cookies["peak_sid"])


def _code(app: App, code: str) -> dict[str, str]:
    """What the sealed code carries, by name, with the user and session it names."""
    opened = app.ctx.get(Sso).codes.open(code, now_ms=int(time.time() * 1000))
    assert opened is not None, code
    return {
        "user_id": opened.user_id,
        "sid": opened.session_id,
        **{k: str(v) for k, v in opened.code._asdict().items()},
    }


async def test_the_hop_with_a_live_session_is_one_redirect_with_a_code(app: App) -> None:
    await add_client(app, "shop", SHOP)
    await add_client(app, "pay", PAY)
    cookie = await _cookie(app, "alice")
    session = OpaqueToken.parse(cookie)
    assert session is not None
    session_key = keys.session(session.user_id, session.session_id)
    await app.ctx.redis.hset(session_key, "last_seen_at", int(time.time() * 1000) - 5000)
    sent = params(login_hint="ignored")
    back = redirected(await authorize(app.http, sent), SHOP)
    assert set(back) == {"code", "state"} and back["state"] == sent["state"]
    record = _code(app, back["code"])
    assert record == {
        "client_id": "shop", "redirect_digest": code_scripts.redirect_digest(SHOP), "scope": "openid profile",
        "nonce": sent["nonce"], "code_challenge": sent["code_challenge"], "code_challenge_method": "S256",
        "sid": session.session_id, "user_id": session.user_id, "issued_at": record["issued_at"],
    }  # fmt: skip
    assert abs(int(record["issued_at"]) / 1000 - time.time()) < 5
    # Nothing of the code is in Redis until it is redeemed.
    token = OpaqueToken.parse(back["code"].rsplit(".", 1)[0] + ".x")
    assert token is not None and await app.ctx.redis.keys(f"*{token.user_id}*:code:*") == []
    # The hop slid the session, as any SSO call does.
    assert int(str(await app.ctx.redis.hget(session_key, "last_seen_at"))) > int(time.time() * 1000) - 3000
    # A second client on another origin (its own query kept) gets its code without any page: single sign-on.
    other = params("pay", PAY, scope="openid email")
    back_pay = redirected(await authorize(app.http, other), PAY)
    assert back_pay["tenant"] == "1" and back_pay["state"] == other["state"]
    assert _code(app, back_pay["code"])["scope"] == "openid"  # unknown scopes are left out
    # Hundreds of hops of one session at once: every one a redirect with its own code.
    hops = await asyncio.gather(*(authorize(app.http, params()) for _ in range(200)))
    codes = {redirected(h, SHOP)["code"] for h in hops}
    assert len(codes) == 200
    # No PostgreSQL on the hop: the clients are in memory, the session and the code in Redis.
    await app.ctx.db.close()
    assert "code" in redirected(await authorize(app.http, params()), SHOP)
    # An unknown client then still gets its page (the reload it asks for fails quietly), never a 5xx.
    app.ctx.get(Sso).clients._loaded_at = 0.0  # as if the last reload were long ago
    not_redirected(await authorize(app.http, params("unknown")))
    # After a logout the cookie is worth nothing: the page (or login_required).
    assert (await app.http.post("/sso/logout", headers=SITE)).status_code == 204
    app.http.cookies.set("peak_sid", cookie)
    assert (await authorize(app.http, params())).status_code == 200
    none = redirected(await authorize(app.http, params(prompt="none", state="s1")), SHOP)
    assert none == {"error": "login_required", "error_description": "no live sign-in", "state": "s1"}
    # A forged cookie for a real session is no session either.
    app.http.cookies.set("peak_sid", f"{session.user_id}.{session.session_id}.forged")
    assert redirected(await authorize(app.http, params(prompt="none")), SHOP)["error"] == "login_required"


async def test_the_sign_in_page_signs_in_and_redirects_back_with_a_code(app: App) -> None:
    await add_client(app, "shop", SHOP)
    await register(app.http, "alice")
    sent = params(login_hint='<b>"alice"</b>')
    page = await authorize(app.http, sent)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert "form-action 'self' https://shop.example" in csp
    assert "<script" not in page.text and "<b>" not in page.text  # the hint is escaped
    form = form_of(page)
    assert form["username"] == '<b>"alice"</b>'
    assert "peak_signin" in app.http.cookies
    # A wrong password: the page again, with the API's answer.
    wrong = await app.http.post("/sso/signin", data={**form, "username": "alice", "password": "nope nope nope"},
                                headers=SITE)  # fmt: skip
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text
    assert "peak_sid" not in app.http.cookies
    done = await app.http.post(
        "/sso/signin", data={**form, "username": "alice", "password": PASSWORD}, headers=SITE
    )
    back = redirected(done, SHOP)
    assert done.status_code == 303 and back["state"] == sent["state"]
    record = _code(app, back["code"])
    assert record["nonce"] == sent["nonce"]
    # The cookie is set as the login sets it, and the session is like any other.
    set_cookie = done.headers.get_list("set-cookie")
    assert any(c.startswith("peak_sid=") and "HttpOnly" in c and "SameSite=lax" in c for c in set_cookie)
    listed = (await app.http.get("/sso/sessions")).json()["sessions"]
    assert [s["id"] for s in listed] == [record["sid"]]
    # From now on the hop needs no page; prompt=login asks for the password again.
    assert "code" in redirected(await authorize(app.http, params()), SHOP)
    again = await authorize(app.http, params(prompt="login"))
    assert again.status_code == 200 and form_of(again)["username"] == ""


async def test_max_age_and_prompt(app: App) -> None:
    await add_client(app, "shop", SHOP)
    cookie = OpaqueToken.parse(await _cookie(app, "alice"))
    assert cookie is not None
    session_key = keys.session(cookie.user_id, cookie.session_id)
    await app.ctx.redis.hset(session_key, "auth_time", int(time.time()) - 100)
    assert "code" in redirected(await authorize(app.http, params(max_age="1000")), SHOP)
    # Signed in longer ago than max_age: the password again (or login_required with prompt=none).
    stale = await authorize(app.http, params(max_age="50"))
    assert stale.status_code == 200 and "<form" in stale.text
    refused = redirected(await authorize(app.http, params(max_age="50", prompt="none")), SHOP)
    assert refused["error"] == "login_required"
    # A session without auth_time (opened before it was recorded) counts from its creation.
    await app.ctx.redis.hdel(session_key, "auth_time")
    assert "code" in redirected(await authorize(app.http, params(max_age="1000")), SHOP)
    # The sign-in after max_age's page records a new auth_time (the ID token's, from the session it names).
    form = form_of(stale)
    done = await app.http.post(
        "/sso/signin", data={**form, "username": "alice", "password": PASSWORD}, headers=SITE
    )
    fresh = _code(app, redirected(done, SHOP)["code"])
    signed_in = await app.ctx.redis.hget(keys.session(fresh["user_id"], fresh["sid"]), "auth_time")
    assert abs(int(str(signed_in)) - time.time()) < 5
    assert "code" in redirected(await authorize(app.http, params(max_age="50")), SHOP)


_REFUSALS: list[tuple[dict[str, str | None], str]] = [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "invalid_request"),
    ({"scope": "profile"}, "invalid_scope"),
    ({"scope": None}, "invalid_scope"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"prompt": "bogus"}, "invalid_request"),
    ({"prompt": "none login"}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"max_age": "١٢"}, "invalid_request"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"request": "eyJhbGciOi..."}, "request_not_supported"),
    ({"request_uri": "https://evil.example/r"}, "request_uri_not_supported"),
    ({"nonce": "n" * 513}, "invalid_request"),
]


async def test_other_errors_go_back_to_the_client_with_the_state(app: App) -> None:
    await add_client(app, "public-app", SHOP, public=True)
    for change, error in _REFUSALS:
        sent = params("public-app", **change)
        back = redirected(await authorize(app.http, sent), SHOP)
        assert back["error"] == error and back["state"] == sent["state"] and back["error_description"], change


async def test_pkce_is_needed_unless_a_confidential_client_is_allowed_without(app: App) -> None:
    await add_client(app, "strict", SHOP)
    await add_client(app, "legacy", SHOP, allow_no_pkce=True)
    no_pkce = {"code_challenge": None, "code_challenge_method": None}
    assert (
        redirected(await authorize(app.http, params("strict", **no_pkce)), SHOP)["error"] == "invalid_request"
    )
    assert (await authorize(app.http, params("legacy", **no_pkce))).status_code == 200
    # A repeated parameter is refused (RFC 6749 3.1); a repeated or oversized state is not sent back.
    sent = params("strict")
    repeated = urlencode(sent) + "&scope=openid"
    assert redirected(await authorize(app.http, repeated), SHOP) == {
        "error": "invalid_request", "error_description": "'scope' is given more than once", "state": sent["state"],
    }  # fmt: skip
    huge = redirected(await authorize(app.http, params("strict", state="s" * 5000)), SHOP)
    assert huge["error"] == "invalid_request" and "state" not in huge
    twice = redirected(await authorize(app.http, urlencode(sent) + "&state=other"), SHOP)
    assert twice["error"] == "invalid_request" and "state" not in twice
    # A unicode state comes back as it was sent.
    odd = params("strict", state="ß✓ &=?#€")
    page = await authorize(app.http, odd)
    assert page.status_code == 200
    assert redirected(await authorize(app.http, {**odd, "prompt": "none"}), SHOP)["state"] == "ß✓ &=?#€"


async def test_hostile_clients_and_redirect_uris_get_a_page_never_a_redirect(app: App) -> None:
    await add_client(app, "shop", SHOP, "https://good.example/cb")
    await _cookie(app, "alice")  # even with a live session
    bad_uris = [
        "javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "https://evil.example/callback",
        "https://good.example@evil.example/cb", "https://good.example/cb@evil.example", "https://good.example/cb#x",
        "https://good.example/cb/", "https://good.example/cb?x=1", "HTTPS://good.example/cb", "//evil.example/cb",
        "https://good.example/cb/../../evil", "https://good.example%2fcb", " https://good.example/cb",
        "https://good.example/cb\u200b", "https://gööd.example/cb", "https://good.example/" + "a" * 30_000, "",
    ]  # fmt: skip
    for uri in bad_uris:
        not_redirected(await authorize(app.http, params(redirect_uri=uri)))
    for query in (
        params("unknown"), params(client_id=None), params("shop\u0000"), params("ß" * 100),
        urlencode(params()) + "&client_id=shop", urlencode(params()) + f"&redirect_uri={SHOP}",
        urlencode(params(redirect_uri=None)), "&".join(f"p{i}=x" for i in range(100)) + "&" + urlencode(params()),
        "client_id=%ff%fe&redirect_uri=%c0%af", "",
    ):  # fmt: skip
        response = await authorize(app.http, query)
        assert response.status_code in (400, 422) and "location" not in response.headers, query
    # An unknown client's page names nothing of the request.
    page = await authorize(app.http, params("<script>x</script>", redirect_uri="https://evil.example/"))
    not_redirected(page)
    assert "evil.example" not in page.text and "<script>x" not in page.text
    # The authorization request as a form (POST) answers alike; another content type is a 415 page.
    posted = await app.http.post("/sso/authorize", data=params())
    assert "code" in redirected(posted, SHOP)
    assert (await app.http.post("/sso/authorize", json=params())).status_code == 415


async def test_the_form_needs_its_csrf_token_cookie_and_the_site(app: App) -> None:
    await add_client(app, "shop", SHOP)
    await register(app.http, "alice")
    form = {**form_of(await authorize(app.http, params())), "username": "alice", "password": PASSWORD}
    other = form_of(await authorize(app.http, params(state="other")))
    nonce = app.http.cookies["peak_signin"]
    forged = [
        ({**form, "csrf": ""}, SITE), ({**form, "csrf": "1700000000.AAAA"}, SITE),
        ({**form, "csrf": form["csrf"] + "x"}, SITE), ({**form, "request": other["request"]}, SITE),
        ({**form, "request": form["request"].replace("shop.example", "evil.example")}, SITE),
        ({k: v for k, v in form.items() if k != "csrf"}, SITE),
        (form, {"Origin": "https://evil.example"}), (form, {"Referer": "https://evil.example/x"}),
    ]  # fmt: skip
    for data, headers in forged:
        refused = await app.http.post("/sso/signin", data=data, headers=headers)
        assert refused.status_code == 403, (data, headers, refused.text[:200])
        assert "location" not in refused.headers and "peak_sid" not in app.http.cookies
    # Without the sign-in cookie (another browser), the token is worth nothing.
    app.http.cookies.delete("peak_signin")
    assert (await app.http.post("/sso/signin", data=form, headers=SITE)).status_code == 403
    app.http.cookies.set("peak_signin", nonce, path="/sso")
    # Repeated fields, a JSON body, a form of too many fields: a page, never a 500.
    twice = urlencode(form) + "&password=x"
    headers = {**SITE, "content-type": "application/x-www-form-urlencoded"}
    assert (await app.http.post("/sso/signin", content=twice, headers=headers)).status_code == 400
    assert (await app.http.post("/sso/signin", json=form, headers=SITE)).status_code == 415
    many = "&".join(f"f{i}=1" for i in range(100))
    assert (await app.http.post("/sso/signin", content=many, headers=headers)).status_code == 400
    assert (
        await app.http.post("/sso/signin", data={**form, "username": ""}, headers=SITE)
    ).status_code == 422
    # The genuine form still works, and the token is bound to its time: too old is refused.
    assert (await app.http.post("/sso/signin", data=form, headers=SITE)).status_code == 303
    forms = SigninForms("k" * 32, ttl_s=600)
    token = forms.token(nonce, "r", 1_000_000)
    assert forms.valid(nonce, token, "r", 1_000_599) and not forms.valid(nonce, token, "r", 1_000_601)
    assert not forms.valid(nonce, token, "r2", 1_000_001) and not forms.valid("x" * 22, token, "r", 1_000_001)


async def test_the_page_is_throttled_like_the_api_and_unknown_users_look_alike(
    make_settings: Callable[..., Settings],
) -> None:
    async with sso_app(make_settings(**FROM_ANYWHERE)) as app:
        await add_client(app, "shop", SHOP)
        await register(app.http, "alice")
        form = form_of(await authorize(app.http, params()))

        async def attempt(username: str, password: str, ip: str) -> httpx.Response:
            return await app.http.post("/sso/signin", data={**form, "username": username, "password": password},
                                       headers={**SITE, "X-Forwarded-For": ip})  # fmt: skip

        known, ghost = (
            await attempt("alice", "wrong password!", "203.0.113.9"),
            await attempt("nobody", "wrong password!", "203.0.113.9"),
        )
        assert known.status_code == ghost.status_code == 401
        assert known.text.replace("alice", "nobody") == ghost.text.replace("alice", "nobody")
        # Five failures from one network hold its unknown devices, on the page as on the API.
        for _ in range(4):
            assert (await attempt("alice", "wrong password!", "203.0.113.1")).status_code == 401
        assert (await attempt("alice", "wrong password!", "203.0.113.1")).status_code == 401
        held = await attempt("alice", PASSWORD, "203.0.113.1")
        api = await app.http.post("/sso/login", json={"username": "alice", "password": PASSWORD},
                                  headers={"X-Forwarded-For": "203.0.113.1"})  # fmt: skip
        assert held.status_code == api.status_code == 429 and error_code(api) == "too_many_attempts"
        assert api.json()["error"]["message"] in held.text
        assert abs(int(held.headers["retry-after"]) - int(api.headers["retry-after"])) <= 2
        assert "location" not in held.headers


async def test_the_hop_survives_a_script_flush(app: App) -> None:
    await add_client(app, "shop", SHOP)
    await _cookie(app, "alice")
    assert "code" in redirected(await authorize(app.http, params()), SHOP)
    await app.ctx.redis.script_flush()
    await asyncio.sleep(0.6)  # past the read window: the next hop runs the touch script again
    assert "code" in redirected(await authorize(app.http, params()), SHOP)


async def test_a_hop_right_after_a_touch_still_sees_a_logout_and_a_forged_cookie(app: App) -> None:
    """For half a second after a touch found its session live, a process only reads the session
    (sso/oidc/cookie_check.py): that read must refuse all the touch would."""
    await add_client(app, "shop", SHOP)
    real = await _cookie(app, "alice")
    cookie = OpaqueToken.parse(real)
    assert cookie is not None
    assert "code" in redirected(await authorize(app.http, params()), SHOP)
    forged = (
        f"{cookie.user_id}.{cookie.session_id}.{OpaqueToken.new(cookie.user_id, cookie.session_id).secret}"
    )
    app.http.cookies.clear()
    answers = await asyncio.gather(*(
        authorize(app.http, params(prompt="none"), headers={"cookie": f"peak_sid={value}"})
        for value in [forged] * 50 + [real] * 50
    ))  # fmt: skip
    outcomes = [redirected(a, SHOP) for a in answers]
    assert all(o.get("error") == "login_required" for o in outcomes[:50]), outcomes[:3]
    assert all("code" in o for o in outcomes[50:]), outcomes[50:53]
    # Logged out: the next hop, within the read window, gets no code.
    as_alice = {"cookie": f"peak_sid={real}"}
    ended = await app.http.post("/sso/logout", headers={**SITE, **as_alice})
    assert ended.status_code == 204, ended.text
    again = redirected(await authorize(app.http, params(prompt="none"), headers=as_alice), SHOP)
    assert again.get("error") == "login_required", again


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server")
async def test_the_hop_is_a_503_while_redis_is_unreachable_and_codes_again_after(
    servers: Servers, make_settings: Callable[..., Settings]
) -> None:
    """Redis gone: the plain read between touches and the touch itself are each a 503 that says to retry,
    never a code, a 500 or a sign-in page; once Redis is back, the next hop has its code."""
    redis_port = int(servers.redis.url.rsplit(":", 1)[1].split("/")[0])
    async with (
        FaultProxy("127.0.0.1", redis_port) as proxy,
        sso_app(make_settings(PEAK_REDIS_URL=proxy.url())) as app,
    ):
        await add_client(app, "shop", SHOP)
        await _cookie(app, "alice")
        assert "code" in redirected(await authorize(app.http, params()), SHOP)  # touched: reads come next
        proxy.reset_rate = 1.0
        between = await authorize(app.http, params())
        await asyncio.sleep(0.6)  # past the read window: the touch script
        touch = await authorize(app.http, params())
        for down in (between, touch):
            assert down.status_code == 503 and "location" not in down.headers, down.text[:200]
            assert error_code(down) == "unavailable" and "retry-after" in down.headers
        proxy.heal()
        assert "code" in redirected(await authorize(app.http, params()), SHOP)
