"""The console's guard (sso.guard.require_admin_or_session): an admin by bearer credential or session cookie,
and a change by cookie only from the site itself. The same guard protects every /degrade admin route."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devstack.redis import RedisServer
from kit.settings import Settings
from tests.console.conftest import ADMIN_TOKEN, PASSWORD, SITE, App, console_app, cookie_header, user


def _code(response: object) -> str:
    code: str = response.json()["error"]["code"]  # type: ignore[attr-defined]
    return code


async def test_guard_verdicts(app: App) -> None:
    c = app.http
    admin = await user(app, "ops-admin", admin=True)
    shopper = await user(app, "ops-shopper", admin=False)

    by_token = await c.get("/console/api/me", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert by_token.status_code == 200 and by_token.json()["roles"] == ["admin"]
    login = await c.post("/sso/login", json={"username": "ops-admin", "password": PASSWORD})
    c.cookies.clear()
    sso_bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    by_sso_token = await c.get("/console/api/me", headers=sso_bearer)
    assert by_sso_token.status_code == 200 and by_sso_token.json()["username"] == "ops-admin"

    me = await c.get("/console/api/me", headers=cookie_header(admin))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "ops-admin" and "admin" in me.json()["roles"]
    assert me.headers["content-security-policy"].startswith("default-src 'self'")

    nobody = await c.get("/console/api/me")
    assert nobody.status_code == 401 and _code(nobody) == "unauthenticated"
    forged = await c.get("/console/api/me", headers=cookie_header("x" * 40))
    assert forged.status_code == 401
    huge = await c.get("/console/api/me", headers={b"cookie": b"peak_sid=" + "é".encode() + b"x" * 4000})
    assert huge.status_code == 401
    lacking = await c.get("/console/api/me", headers=cookie_header(shopper))
    assert lacking.status_code == 403 and _code(lacking) == "forbidden"
    assert "admin role" in lacking.json()["error"]["message"]
    stream_refused = await c.get("/console/api/stream", headers=cookie_header(shopper))
    assert stream_refused.status_code == 403

    # A change by cookie: from the site itself only.
    change = {"mode": "shed", "reason": "console guard test"}
    same_site = await c.put(
        "/degrade/switches/reviews", json=change, headers={**cookie_header(admin), "Origin": SITE}
    )
    assert same_site.status_code == 200, same_site.text
    audit = (await c.get("/degrade/audit", headers=cookie_header(admin))).json()["entries"]
    assert audit[-1]["by"] == "ops-admin" and audit[-1]["new"] == "shed"
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}, {}):
        refused = await c.put(
            "/degrade/switches/reviews", json=change, headers={**cookie_header(admin), **headers}
        )
        assert refused.status_code == 403 and _code(refused) == "csrf", headers
    # Reads by cookie need no Origin (a GET changes nothing); a non-admin's change is refused before the body.
    assert (await c.get("/degrade/switches", headers=cookie_header(admin))).status_code == 200
    demoted = await c.put(
        "/degrade/switches/reviews", json=change, headers={**cookie_header(shopper), "Origin": SITE}
    )
    assert demoted.status_code == 403 and _code(demoted) == "forbidden"
    # A bearer call is never a browser's own: no Origin needed.
    assert (await c.put("/degrade/switches/reviews", json=change, headers=sso_bearer)).status_code == 200

    # Logged out: the cookie is dead at once.
    out = await c.post("/sso/logout", headers={**cookie_header(admin), "Origin": SITE})
    assert out.status_code == 204, out.text
    after = await c.get("/console/api/me", headers=cookie_header(admin))
    assert after.status_code == 401 and _code(after) == "unauthenticated"


async def test_session_store_unreachable_is_503(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    try:
        async with console_app(make_settings(PEAK_REDIS_URL=private.url)) as app:
            admin = await user(app, "ops-admin", admin=True)
            assert (await app.http.get("/console/api/me", headers=cookie_header(admin))).status_code == 200
            private.stop()
            down = await app.http.get("/console/api/me", headers=cookie_header(admin))
            assert down.status_code == 503 and _code(down) == "unavailable", down.text
    finally:
        private.stop()
