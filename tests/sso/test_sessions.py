from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from kit.settings import Settings
from sso import keys
from tests.sso.conftest import SITE, App, bearer, error_code, login, register, signed_in, sso_app


async def test_session_answers_who_where_and_when_it_expires(client: httpx.AsyncClient) -> None:
    user = await register(client, "alice")
    tokens = await login(client, "alice")
    client.cookies.clear()
    response = await client.get("/sso/session", headers={**bearer(tokens), "User-Agent": "pytest-agent"})
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["id"] == tokens["session_id"] and session["current"] is True
    assert session["user_id"] == user["id"] and session["username"] == "alice"
    assert session["ip"] == "10.1.2.3"
    assert session["absolute_expires_at"] - session["created_at"] == 43200
    assert 0 < session["idle_expires_at"] - session["last_seen_at"] <= 900
    assert session["idle_expires_at"] <= session["absolute_expires_at"]
    assert len(tokens["session_id"]) >= 22  # at least 128 random bits, base64url


async def test_the_session_cookie_alone_authenticates(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    tokens = await login(client, "alice")
    assert "peak_sid" in client.cookies
    by_cookie = await client.get("/sso/session")
    assert by_cookie.status_code == 200 and by_cookie.json()["id"] == tokens["session_id"]
    client.cookies.set("peak_sid", client.cookies["peak_sid"][:-2] + "xx")
    forged = await client.get("/sso/session")
    assert (forged.status_code, error_code(forged)) == (401, "unauthenticated")
    client.cookies.clear()
    assert (await client.get("/sso/session")).status_code == 401


async def test_idle_timeout_slides_with_use(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="2", PEAK_SSO_ABSOLUTE_TIMEOUT_S="60")
    async with sso_app(settings) as app:
        tokens = await signed_in(app.http, "alice")
        for _ in range(3):  # 3.6 s in all, longer than the idle timeout: each use extends it
            await asyncio.sleep(1.2)
            assert (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200
        await asyncio.sleep(2.3)
        idle = await app.http.get("/sso/session", headers=bearer(tokens))
        assert idle.status_code == 401


async def test_absolute_timeout_is_never_extended(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="2", PEAK_SSO_ABSOLUTE_TIMEOUT_S="3")
    async with sso_app(settings) as app:
        tokens = await signed_in(app.http, "alice")
        session = (await app.http.get("/sso/session", headers=bearer(tokens))).json()
        assert session["absolute_expires_at"] - session["created_at"] == 3
        answers = []
        for _ in range(5):
            await asyncio.sleep(0.8)
            answers.append((await app.http.get("/sso/session", headers=bearer(tokens))).status_code)
        assert answers[:3] == [200, 200, 200] and answers[-1] == 401
        refresh = await app.http.post(
            "/sso/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        assert (refresh.status_code, error_code(refresh)) == (401, "invalid_grant")


async def test_a_login_beyond_the_maximum_ends_the_oldest_session(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(PEAK_SSO_MAX_SESSIONS="3")
    async with sso_app(settings) as app:
        await register(app.http, "alice")
        logins = [await login(app.http, "alice") for _ in range(5)]
        app.http.cookies.clear()
        alive = [(await app.http.get("/sso/session", headers=bearer(t))).status_code for t in logins]
        assert alive == [401, 401, 200, 200, 200]
        listed = (await app.http.get("/sso/sessions", headers=bearer(logins[-1]))).json()["sessions"]
        assert [s["id"] for s in listed] == [t["session_id"] for t in logins[2:]]


async def test_concurrent_logins_keep_at_most_the_maximum(make_settings: Callable[..., Settings]) -> None:
    # The account throttle lets at most its failure budget of logins per account be in flight; raise it
    # so that 200 logins of one account race each other here.
    settings = make_settings(PEAK_SSO_ACCOUNT_MAX_FAILURES="1000")
    async with sso_app(settings) as app:
        user = await register(app.http, "alice")
        logins = await asyncio.gather(*(login(app.http, "alice") for _ in range(200)))
        app.http.cookies.clear()
        alive = await asyncio.gather(*(app.http.get("/sso/session", headers=bearer(t)) for t in logins))
        assert sum(r.status_code == 200 for r in alive) == 5
        assert await app.ctx.redis.zcard(keys.session_index(user["id"])) == 5


async def test_the_index_is_pruned_without_keyspace_notifications(app: App) -> None:
    assert (await app.ctx.redis.config_get("notify-keyspace-events"))["notify-keyspace-events"] == ""
    user = await register(app.http, "alice")
    first, second = await login(app.http, "alice"), await login(app.http, "alice")
    app.http.cookies.clear()
    # The session record disappears the way an expiry makes it disappear: nothing tells the index.
    await app.ctx.redis.delete(keys.session(user["id"], first["session_id"]))
    assert await app.ctx.redis.zcard(keys.session_index(user["id"])) == 2
    listed = (await app.http.get("/sso/sessions", headers=bearer(second))).json()["sessions"]
    assert [s["id"] for s in listed] == [second["session_id"]]
    assert await app.ctx.redis.zrange(keys.session_index(user["id"]), 0, -1) == [second["session_id"]]


async def test_logout_ends_the_session_and_clears_the_cookie(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    tokens = await login(client, "alice")
    out = await client.post("/sso/logout", headers=bearer(tokens))
    assert out.status_code == 204
    assert 'peak_sid=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.clear()
    assert (await client.get("/sso/session", headers=bearer(tokens))).status_code == 401
    assert (await client.post("/sso/logout", headers=bearer(tokens))).status_code == 401
    refresh = await client.post(
        "/sso/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert (refresh.status_code, error_code(refresh)) == (401, "invalid_grant")


async def test_logout_by_cookie(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    tokens = await login(client, "alice")
    # From the site itself (sso.csrf): a cookie-authenticated change needs the site's Origin.
    assert (await client.post("/sso/logout", headers=SITE)).status_code == 204
    assert (await client.get("/sso/session", headers=bearer(tokens))).status_code == 401


async def test_list_and_end_one_session(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    await register(client, "bob")
    phone, laptop = await login(client, "alice"), await login(client, "alice")
    bob = await login(client, "bob")
    client.cookies.clear()
    listed = (await client.get("/sso/sessions", headers=bearer(laptop))).json()["sessions"]
    assert [(s["id"], s["current"]) for s in listed] == [
        (phone["session_id"], False),
        (laptop["session_id"], True),
    ]
    assert {
        "created_at",
        "last_seen_at",
        "idle_expires_at",
        "absolute_expires_at",
        "ip",
        "user_agent",
    } <= set(listed[0])
    # Someone else's session id is simply not one of yours.
    other = await client.delete(f"/sso/sessions/{bob['session_id']}", headers=bearer(laptop))
    assert (other.status_code, error_code(other)) == (404, "not_found")
    assert (await client.get("/sso/session", headers=bearer(bob))).status_code == 200
    ended = await client.delete(f"/sso/sessions/{phone['session_id']}", headers=bearer(laptop))
    assert ended.status_code == 204
    assert (await client.get("/sso/session", headers=bearer(phone))).status_code == 401
    assert (await client.get("/sso/session", headers=bearer(laptop))).status_code == 200


async def test_logout_everywhere(client: httpx.AsyncClient) -> None:
    await register(client, "alice")
    await register(client, "bob")
    sessions = [await login(client, "alice") for _ in range(3)]
    bob = await login(client, "bob")
    client.cookies.clear()
    assert (await client.delete("/sso/sessions", headers=bearer(sessions[0]))).status_code == 204
    for tokens in sessions:
        assert (await client.get("/sso/session", headers=bearer(tokens))).status_code == 401
    assert (await client.get("/sso/session", headers=bearer(bob))).status_code == 200


async def test_session_endpoints_need_credentials(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/sso/session"), ("GET", "/sso/sessions"), ("POST", "/sso/logout"),
                         ("DELETE", "/sso/sessions"), ("DELETE", "/sso/sessions/x")):  # fmt: skip
        response = await client.request(method, path)
        assert (response.status_code, error_code(response)) == (401, "unauthenticated"), path
        garbage = await client.request(method, path, headers={"Authorization": "Bearer not.a.token"})
        assert garbage.status_code == 401, path


async def test_userinfo_checks_strictly_and_slides(client: httpx.AsyncClient) -> None:
    user = await register(client, "alice")
    tokens = await login(client, "alice")
    client.cookies.clear()
    info = await client.get("/sso/userinfo", headers=bearer(tokens))
    assert info.json() == {
        "sub": user["id"],
        "username": "alice",
        "roles": ["shopper"],
        "sid": tokens["session_id"],
    }
    await client.post("/sso/logout", headers=bearer(tokens))
    gone = await client.get("/sso/userinfo", headers=bearer(tokens))
    assert (gone.status_code, error_code(gone)) == (401, "unauthenticated")


async def test_announcing_scripts_survive_a_script_flush(app: App) -> None:
    # They are sent with their announce() prelude; after a flush the kit sends that same source as EVAL.
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    app.http.cookies.clear()
    await app.ctx.redis.script_flush()
    assert (await app.http.post("/sso/logout", headers=bearer(tokens))).status_code == 204
    assert await app.ctx.redis.zscore(keys.journal(user["id"]), f"s:{tokens['session_id']}") is not None
