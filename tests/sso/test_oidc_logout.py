"""RP-initiated logout (``/sso/end_session``) and back-channel logout (the workers' deliveries), end to end:
real receivers on free ports get logout tokens that verify against the JWKS after every way a session ends;
a receiver that is down at first gets its token later; a worker SIGKILLed mid-delivery leaves it to another.

The OIDC record of a session (``keys.oidc_session``, ``keys.oidc_expiries``) is written here with the fields
the code redemption writes (contracts.md "Tokens")."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from kit.redis import create_redis
from kit.settings import Settings
from kit.tasks import cancel_loops
from loadtest.faultproxy import FaultProxy
from sso import keys, scripts
from sso.keystore import KeyStore
from sso.oidc.backchannel import BackchannelDelivery
from sso.oidc.backchannel_worker import backchannel_loop
from sso.oidc.logout_token import BACKCHANNEL_EVENT, LogoutTokens
from sso.service import Sso
from sso.settings import SsoSettings
from tests.conftest import TEST_REDIS, TEST_SECRET, Servers
from tests.sso.conftest import PASSWORD, SITE, App, bearer, issuer, register, signing_key, sso_app
from tests.sso.oidc_support import authorize, params, pkce, redirected
from tests.support import kill_group, run_peak, start_peak

# Short delivery settings: a failed attempt is retried max(timeout + 1, backoff) = 1.5 s later.
FAST = {"PEAK_SSO_BACKCHANNEL_TIMEOUT_S": "0.5", "PEAK_SSO_BACKCHANNEL_RETRY_BASE_S": "0.2",
        "PEAK_SSO_BACKCHANNEL_RETRY_MAX_S": "1", "PEAK_SSO_BACKCHANNEL_ATTEMPTS": "20"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Receiver:
    """A client's back-channel logout endpoint: a bare HTTP/1.1 server recording each logout token."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.tokens: list[str] = []
        self.content_types: list[str] = []
        self.hang_first = False
        self.status = 200
        self.arrived = asyncio.Event()
        self.first_hung = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/backchannel"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
            )
            body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
            if self.hang_first:
                self.hang_first = False
                self.first_hung.set()
                await asyncio.sleep(60)  # the worker dies meanwhile
                return
            self.tokens.extend(parse_qs(body).get("logout_token", []))
            self.content_types.append(headers.get("content-type", ""))
            self.arrived.set()
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def claims(self, app: App, jwks: dict[str, Any], client_id: str) -> list[dict[str, Any]]:
        """Every token received, verified as a client would (signature by the JWKS, iss, aud, typ)."""
        found = []
        for token in self.tokens:
            header = jwt.get_unverified_header(token)
            assert header["typ"] == "logout+jwt"
            key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
            claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=client_id,
                                issuer=issuer(app), options={"require": ["iat", "exp", "jti", "sid", "sub"]})  # fmt: skip
            assert claims["events"] == {BACKCHANNEL_EVENT: {}} and "nonce" not in claims
            found.append(claims)
        return found

    async def wait_sids(self, app: App, jwks: dict[str, Any], client_id: str, sids: set[str], *,
                        timeout_s: float) -> float:  # fmt: skip
        started = time.monotonic()
        while not sids <= {c["sid"] for c in self.claims(app, jwks, client_id)}:
            if time.monotonic() - started > timeout_s:
                got = {c["sid"] for c in self.claims(app, jwks, client_id)}
                raise AssertionError(f"{client_id}: missing {sids - got} after {timeout_s} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started


async def add_oidc_client(app: App, name: str, *, backchannel: str | None = None,
                          post_logout: tuple[str, ...] = ()) -> None:  # fmt: skip
    clients = app.ctx.get(Sso).clients
    await clients.add(name, redirect_uris=[f"https://{name}.example/cb"], post_logout_redirect_uris=post_logout,
                      backchannel_logout_uri=backchannel)  # fmt: skip
    await clients.reload()


async def sign_in(app: App, username: str, *, new: bool = True) -> dict[str, Any]:
    if new:
        await register(app.http, username)
    response = await app.http.post("/sso/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    app.http.cookies.clear()
    tokens: dict[str, Any] = response.json()
    tokens["user_id"] = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    return tokens


async def record_oidc(app: App, tokens: dict[str, Any], *clients: str) -> str:
    """The OIDC side of the session as the code redemption writes it; the session id."""
    redis, user_id, sid = app.ctx.redis, tokens["user_id"], tokens["session_id"]
    absolute = str(await redis.hget(keys.session(user_id, sid), "absolute_expires_at"))
    now_ms = int(time.time() * 1000)
    await redis.hset(keys.oidc_session(user_id, sid), mapping={
        "user_id": user_id, "username": "u", "absolute_expires_at": absolute, **{f"c:{c}": now_ms for c in clients}})  # fmt: skip
    await redis.zadd(keys.oidc_expiries(keys.shard_of(user_id)), {sid: int(absolute)})
    return str(sid)


async def client_jwks(app: App) -> dict[str, Any]:
    """The JWK set a client holds, once the key of its logout tokens (RS256, every client's default) exists: it
    is made on first use, by the first RS256 ID token or logout token."""
    await signing_key(app, "RS256")
    app.ctx.get(Sso).forget_jwks()
    jwks: dict[str, Any] = (await app.http.get("/.well-known/jwks.json")).json()
    return jwks


@contextlib.asynccontextmanager
async def worker_loop(app: App) -> AsyncIterator[None]:
    task = asyncio.create_task(backchannel_loop(app.ctx))
    try:
        yield
    finally:
        await cancel_loops([task])  # its stream read may swallow a single cancel


async def keep_alive(app: App, tokens: dict[str, Any]) -> None:
    """Slide the session every 0.4 s until it ends."""
    for _ in range(100):
        if (await app.http.get("/sso/session", headers=bearer(tokens))).status_code != 200:
            return
        await asyncio.sleep(0.4)


async def test_every_way_a_session_ends_reaches_the_clients(
    make_settings: Callable[..., Settings], servers: Servers
) -> None:
    settings = make_settings(PEAK_SSO_IDLE_TIMEOUT_S="2", PEAK_SSO_ABSOLUTE_TIMEOUT_S="4",
                             PEAK_SSO_BACKCHANNEL_IDLE_CHECK_S="0.5", **FAST)  # fmt: skip
    shop, pay, strict = Receiver(), Receiver(), Receiver()  # pay is down until 2 s in
    strict.status = 400  # refuses the token: a dead letter at once
    await shop.start()
    await strict.start()
    async with sso_app(settings) as app:
        await add_oidc_client(app, "shop", backchannel=shop.uri)
        await add_oidc_client(app, "pay", backchannel=pay.uri)
        await add_oidc_client(app, "strict", backchannel=strict.uri)
        await add_oidc_client(app, "quiet")  # no back-channel URI: told nothing
        jwks = await client_jwks(app)
        one = await sign_in(app, "bc-logout")
        everywhere = [await sign_in(app, "bc-all"), await sign_in(app, "bc-all", new=False)]
        pw_kept, pw_ended = await sign_in(app, "bc-password"), await sign_in(app, "bc-password", new=False)
        disabled, idle, absolute = await sign_in(app, "bc-disabled"), await sign_in(app, "bc-idle"), await sign_in(
            app, "bc-absolute")  # fmt: skip
        expected = {await record_oidc(app, t, "shop", "quiet") for t in
                    (*everywhere, pw_ended, disabled, idle, absolute)}  # fmt: skip
        expected.add(await record_oidc(app, one, "shop", "pay", "strict", "quiet"))
        alive = [asyncio.create_task(keep_alive(app, t)) for t in (absolute, disabled, pw_kept)]
        async with worker_loop(app):
            started = time.monotonic()
            assert (await app.http.post("/sso/logout", headers=bearer(one))).status_code == 204
            assert (await app.http.delete("/sso/sessions", headers=bearer(everywhere[0]))).status_code == 204
            change = {"old_password": PASSWORD, "new_password": PASSWORD + " 2"}
            response = await app.http.post("/sso/password", json=change, headers=bearer(pw_kept))
            assert response.status_code == 204, response.text
            result = await asyncio.to_thread(run_peak, "sso", "disable", "bc-disabled", env=servers.env())
            assert result.returncode == 0, result.stderr
            # Meanwhile the strict client refused its token: a dead letter, listed, then re-queued (and refused).
            listed = await asyncio.to_thread(run_peak, "sso", "backchannel", env=servers.env())
            assert listed.returncode == 0, listed.stderr
            assert "dead letters: 1" in listed.stdout and "client strict" in listed.stdout, listed.stdout
            assert f"session {one['session_id']}" in listed.stdout and "HTTP 400" in listed.stdout
            again = await asyncio.to_thread(run_peak, "sso", "backchannel", "--retry-all", env=servers.env())
            assert again.returncode == 0 and "1 dead letters re-queued" in again.stdout, again.stderr
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
            await pay.start()  # the pay client comes back: its first attempts were refused
            took = await shop.wait_sids(app, jwks, "shop", expected, timeout_s=9)
            await pay.wait_sids(app, jwks, "pay", {one["session_id"]}, timeout_s=5)
            print(f"all {len(expected)} sessions told to shop {took:.1f} s after the first logout "
                  f"(the last ends by its absolute cap at 4 s)")  # fmt: skip
        await asyncio.gather(*alive)
        by_sid = {c["sid"]: c for c in shop.claims(app, jwks, "shop")}
        assert by_sid[one["session_id"]]["sub"] == one["user_id"]
        assert by_sid[absolute["session_id"]]["sub"] == absolute["user_id"]
        assert len(shop.tokens) == len(expected), "one token per session and client: nothing found twice"
        assert pw_kept["session_id"] not in by_sid
        assert set(shop.content_types) == {"application/x-www-form-urlencoded"}
        assert [c["sid"] for c in strict.claims(app, jwks, "strict")] == [one["session_id"]] * 2, "re-queued"
        [(_, dead)] = await dead_letters(app)
        assert dead["client"] == "strict" and dead["reason"] == "HTTP 400"
        await app.ctx.redis.delete(keys.BACKCHANNEL_DEAD)
        # The last attempt that fails makes a dead letter too (a client that never came back).
        await add_oidc_client(app, "gone", backchannel=f"http://127.0.0.1:{free_port()}/nobody")
        sso = app.ctx.get(Sso)
        tokens = LogoutTokens(KeyStore(app.ctx.db, algorithm="RS256", secret_key=TEST_SECRET,
                                       access_token_ttl_s=900), issuer=issuer(app),
                              algorithm_of=lambda _: "RS256")  # fmt: skip

        def uri(client_id: str) -> str | None:
            client = sso.clients.get(client_id)
            return None if client is None else client.backchannel_logout_uri

        async with httpx.AsyncClient() as http:
            delivery = BackchannelDelivery(app.ctx.redis, settings.of(SsoSettings), tokens=tokens, http=http,
                                           client_uri=uri)  # fmt: skip
            fields = {"sid": "s-gone", "sub": one["user_id"], "client": "gone"}
            assert await delivery.attempt("1-1", fields, 19) == "retry"
            assert await delivery.attempt("1-1", fields, 20) == "dead"
        [(_, dead)] = await dead_letters(app)
        assert dead["client"] == "gone" and dead["attempts"] == "20" and dead["reason"] == "ConnectError"
    for receiver in (shop, pay, strict):
        await receiver.stop()


async def test_a_worker_killed_mid_delivery_leaves_it_to_another(
    make_settings: Callable[..., Settings], servers: Servers, tmp_path: Path
) -> None:
    env = {**servers.env(), "PEAK_SSO_BACKCHANNEL_TIMEOUT_S": "1", "PEAK_SSO_BACKCHANNEL_RETRY_BASE_S": "0.2"}
    settings = make_settings(**env)
    receiver = Receiver()
    receiver.hang_first = True
    await receiver.start()
    workers = []
    async with sso_app(settings) as app:
        await add_oidc_client(app, "shop", backchannel=receiver.uri)
        tokens = await sign_in(app, "bc-kill")
        sid = await record_oidc(app, tokens, "shop")
        jwks = await client_jwks(app)
        try:
            logs = [tmp_path / f"worker{i}.log" for i in range(2)]
            workers = [start_peak("worker", env=env, log=log) for log in logs]
            deadline = time.monotonic() + 60
            while not all(_started(log) for log in logs):
                assert time.monotonic() < deadline, "the two workers did not start"
                await asyncio.sleep(0.1)
            assert (await app.http.post("/sso/logout", headers=bearer(tokens))).status_code == 204
            await asyncio.wait_for(receiver.first_hung.wait(), 10)
            pending: Any = await app.ctx.redis.xpending_range(keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP, "-",
                                                              "+", 10)  # fmt: skip
            holder = next(w for w in workers if f"-{w.pid}-" in str(pending[0]["consumer"]))
            kill_group(holder)  # SIGKILL, mid-POST
            took = await receiver.wait_sids(app, jwks, "shop", {sid}, timeout_s=10)
            print(f"delivered by the other worker {took:.1f} s after the first one was killed")
        finally:
            for w in workers:
                kill_group(w)
            await receiver.stop()


async def test_logout_at_one_client_reaches_both_through_the_real_flow(app: App) -> None:
    """Sign in once, codes for two clients by the SSO hop, tokens from the token endpoint (the OIDC record is
    the redemption's own); RP-initiated logout at one: both receive a logout token, prompt=none is refused."""
    receivers = {"shop": Receiver(), "pay": Receiver()}
    secrets: dict[str, str | None] = {}
    for name, receiver in receivers.items():
        await receiver.start()
        secrets[name] = await app.ctx.get(Sso).clients.add(
            name, redirect_uris=[f"https://{name}.example/cb"], post_logout_redirect_uris=[f"https://{name}.example/bye"],
            backchannel_logout_uri=receiver.uri,
        )  # fmt: skip
    await app.ctx.get(Sso).clients.reload()
    await register(app.http, "rp-both")
    assert (
        await app.http.post("/sso/login", json={"username": "rp-both", "password": PASSWORD})
    ).status_code == 200
    id_tokens = {}
    for name in receivers:
        verifier, challenge = pkce()
        uri = f"https://{name}.example/cb"
        code = redirected(await authorize(app.http, params(name, uri, code_challenge=challenge)), uri)["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": uri,
            "code_verifier": verifier,
        }
        answer = await app.http.post("/sso/token", data=form, auth=(name, secrets[name] or ""))
        assert answer.status_code == 200, answer.text
        id_tokens[name] = answer.json()["id_token"]
    sid = jwt.decode(id_tokens["shop"], options={"verify_signature": False})["sid"]
    jwks = (await app.http.get("/.well-known/jwks.json")).json()
    async with worker_loop(app):
        query = {"id_token_hint": id_tokens["shop"], "post_logout_redirect_uri": "https://shop.example/bye"}
        ended = await app.http.get(f"/sso/end_session?{urlencode(query)}")
        assert ended.status_code == 302 and ended.headers["location"] == "https://shop.example/bye"
        for name, receiver in receivers.items():
            took = await receiver.wait_sids(app, jwks, name, {sid}, timeout_s=5)
            print(f"{name} told {took:.2f} s after the logout")
    uri = "https://pay.example/cb"
    refused = redirected(await authorize(app.http, params("pay", uri, prompt="none")), uri)
    assert refused["error"] == "login_required"
    for receiver in receivers.values():
        await receiver.stop()


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.skipif(TEST_REDIS == "cluster", reason="the proxy stands in front of one redis-server")
async def test_the_loop_waits_out_store_outages_and_catches_up(
    servers: Servers, make_settings: Callable[..., Settings]
) -> None:
    """PostgreSQL gone when the worker starts (no clients table yet), then Redis gone while a session ends: the
    loop waits each out (a stand-in for 90 s: its pause is capped the same way) and delivers once they are back."""
    receiver = Receiver()
    await receiver.start()
    pg_url = urlsplit(servers.postgres.url)
    async with (
        FaultProxy("127.0.0.1", _port(servers.redis.url)) as redis_proxy,
        FaultProxy("127.0.0.1", _port(servers.postgres.url)) as pg_proxy,
    ):
        env = {"PEAK_REDIS_URL": redis_proxy.url(), "PEAK_OUTAGE_RETRY_MAX_S": "0.5", **FAST,
               "PEAK_DATABASE_URL": pg_url._replace(netloc=f"{pg_url.netloc.rsplit('@', 1)[0]}@127.0.0.1:"
                                                    f"{pg_proxy.port}").geturl()}  # fmt: skip
        async with sso_app(make_settings(**env)) as app:
            await add_oidc_client(app, "shop", backchannel=receiver.uri)
            jwks = await client_jwks(app)
            first, second = await sign_in(app, "bc-outage"), await sign_in(app, "bc-outage", new=False)
            sids = [await record_oidc(app, t, "shop") for t in (first, second)]
            pg_proxy.reset_rate = 1.0
            task = asyncio.create_task(backchannel_loop(app.ctx))
            try:
                assert (await app.http.post("/sso/logout", headers=bearer(first))).status_code == 204
                await asyncio.sleep(0.8)
                assert not task.done() and not receiver.tokens
                pg_proxy.heal()
                took = await receiver.wait_sids(app, jwks, "shop", {sids[0]}, timeout_s=5)
                print(f"told {took:.1f} s after PostgreSQL came back")
                redis_proxy.reset_rate = 1.0
                await asyncio.sleep(0.3)
                direct = create_redis(servers.redis.url)
                try:  # the session ends meanwhile, by another process that reaches Redis
                    assert await scripts.end_sessions(direct, second["user_id"], "one", sids[1])
                finally:
                    await direct.aclose()
                await asyncio.sleep(0.8)
                assert not task.done() and len(receiver.tokens) == 1
                redis_proxy.heal()
                took = await receiver.wait_sids(app, jwks, "shop", set(sids), timeout_s=5)
                print(f"told {took:.1f} s after Redis came back")
                assert not task.done()
            finally:
                await cancel_loops([task])
                await receiver.stop()


async def dead_letters(app: App) -> list[tuple[str, dict[str, str]]]:
    found: Any = await app.ctx.redis.xrange(keys.BACKCHANNEL_DEAD)
    return [(str(entry_id), dict(fields)) for entry_id, fields in found]


def _started(log: Path) -> bool:
    return log.exists() and "worker started" in log.read_text(errors="replace")


# -- RP-initiated logout ---------------------------------------------------------------------------------

BACK = "https://shop.example/signed-out?x=1"


def id_token(app: App, tokens: dict[str, Any], *, aud: str | list[str] | None = "shop", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": issuer(app), "sub": tokens["user_id"], "aud": aud, "sid": tokens["session_id"],
            "iat": now - 3600, "exp": now - 1800, **claims}  # fmt: skip  # expired: still a logout hint
    return app.ctx.get(Sso).signer.sign({k: v for k, v in body.items() if v is not None}, typ="JWT")


async def live(app: App, tokens: dict[str, Any]) -> bool:
    return (await app.http.get("/sso/session", headers=bearer(tokens))).status_code == 200


async def test_end_session_with_a_hint_redirects_with_state(app: App) -> None:
    await add_oidc_client(app, "shop", post_logout=(BACK,))
    await add_oidc_client(app, "pay", post_logout=("https://pay.example/bye",))
    tokens = await sign_in(app, "rp-hint")
    query = {"id_token_hint": id_token(app, tokens), "post_logout_redirect_uri": BACK, "state": "s t&1"}
    response = await app.http.get(f"/sso/end_session?{urlencode(query)}")
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == BACK.split("?")[0]
    assert parse_qs(location.query) == {"x": ["1"], "state": ["s t&1"]}
    assert not await live(app, tokens)

    # Not registered for the hint's client (another client's, a look-alike, none): a page, nothing ended.
    other = await sign_in(app, "rp-refused")
    for uri in ("https://pay.example/bye", BACK + "&", "https://evil.example/", "//evil.example"):
        query = {"id_token_hint": id_token(app, other), "post_logout_redirect_uri": uri, "state": "x"}
        refused = await app.http.get(f"/sso/end_session?{urlencode(query)}")
        assert refused.status_code == 400 and "location" not in refused.headers, uri
        assert refused.headers["x-frame-options"] == "DENY"
        assert refused.headers["content-type"].startswith("text/html")
    # client_id must agree with the hint; without a hint it names the client.
    query = {"id_token_hint": id_token(app, other), "client_id": "pay", "post_logout_redirect_uri": BACK}
    assert (await app.http.get(f"/sso/end_session?{urlencode(query)}")).status_code == 400
    assert await live(app, other)
    bare_query = {"client_id": "pay", "post_logout_redirect_uri": "https://pay.example/bye", "state": "q"}
    bare = await app.http.get(f"/sso/end_session?{urlencode(bare_query)}")
    assert bare.status_code == 302 and bare.headers["location"] == "https://pay.example/bye?state=q"
    # The POST form of the same (an RP's auto-submitting form: no cookie, SameSite=Lax).
    posted = await app.http.post("/sso/end_session", data={"id_token_hint": id_token(app, other)})
    assert posted.status_code == 200 and "signed out" in posted.text
    assert not await live(app, other)


async def test_end_session_without_a_hint_asks_first(app: App) -> None:
    await add_oidc_client(app, "shop", post_logout=(BACK,))
    await register(app.http, "rp-confirm")
    login = await app.http.post("/sso/login", json={"username": "rp-confirm", "password": PASSWORD})
    tokens = login.json()
    query = urlencode({"client_id": "shop", "post_logout_redirect_uri": BACK, "state": "abc"})
    page = await app.http.get(f"/sso/end_session?{query}")
    assert page.status_code == 200 and "<form" in page.text and await live(app, tokens)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', page.text)}
    # A forged POST (no token, another cookie's token) only shows the question again.
    for forged in ({**fields, "confirm": ""}, {**fields, "confirm": "1." + "A" * 43}):
        again = await app.http.post("/sso/end_session", data=forged, headers=SITE)
        assert again.status_code == 200 and "<form" in again.text and await live(app, tokens)
    done = await app.http.post("/sso/end_session", data=fields, headers=SITE)
    assert done.status_code == 302 and done.headers["location"] == BACK + "&state=abc"
    assert "peak_sid" in done.headers.get("set-cookie", "")
    assert not await live(app, tokens)


async def test_end_session_hostile_inputs_are_never_a_500(app: App) -> None:
    await add_oidc_client(app, "shop", post_logout=(BACK,))
    tokens = await sign_in(app, "rp-hostile")
    good = id_token(app, tokens)
    head, payload, _ = good.split(".")
    none_alg = jwt.encode({"iss": issuer(app), "sub": tokens["user_id"], "aud": "shop", "sid": tokens["session_id"]},
                          "", algorithm="none")  # fmt: skip
    other_key = jwt.encode({"sub": "x", "aud": "shop", "iss": issuer(app)}, "k" * 32, algorithm="HS256",
                           headers={"kid": jwt.get_unverified_header(good)["kid"]})  # fmt: skip
    access = tokens["access_token"]  # an access token is no ID token
    queries = [
        f"id_token_hint={good}&id_token_hint={good}",
        "id_token_hint=" + "a" * 9000,
        "id_token_hint=a.b.c",
        f"id_token_hint={none_alg}",
        f"id_token_hint={other_key}",
        f"id_token_hint={head}.{payload}.AAAA",
        f"id_token_hint={access}",
        "state=%00",
        "post_logout_redirect_uri=%ff%fe",
        "client_id=" + "c" * 100,
        f"post_logout_redirect_uri={BACK}",
        "client_id=nobody&post_logout_redirect_uri=https://x.example/",
        f"id_token_hint={id_token(app, tokens, aud=None, sub=None)}",
        f"id_token_hint={id_token(app, tokens, aud=['a', 'b'])}&post_logout_redirect_uri={BACK}",
    ]
    answers = await asyncio.gather(*(app.http.get(f"/sso/end_session?{q}") for q in queries))
    for q, response in zip(queries, answers, strict=True):
        assert response.status_code in (200, 400, 422), (q[:80], response.status_code, response.text[:200])
        assert "location" not in response.headers, q[:80]
    form = {"content-type": "application/x-www-form-urlencoded"}
    posts = [
        app.http.post("/sso/end_session", json={"id_token_hint": good}),
        app.http.post("/sso/end_session", content=b"id_token_hint=\xff\xfe", headers=form),
        app.http.post("/sso/end_session", content=b"&".join([b"a=1"] * 100), headers=form),
        app.http.post("/sso/end_session", files={"id_token_hint": ("x", b"y")}),
    ]
    for response in await asyncio.gather(*posts):
        assert response.status_code in (200, 400, 413, 415), (response.status_code, response.text[:200])
    assert await live(app, tokens), "none of these ended the session"
    # A crowd of RPs logging their users out at once: each its own session.
    crowd = [await sign_in(app, f"rp-crowd-{i}") for i in range(20)]
    ends = await asyncio.gather(
        *(app.http.get(f"/sso/end_session?id_token_hint={id_token(app, t)}") for t in crowd)
    )
    assert [r.status_code for r in ends] == [200] * len(crowd)
    assert not any(await asyncio.gather(*(live(app, t) for t in crowd)))
