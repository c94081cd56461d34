"""Strict validation: the session is checked and slid in Redis on every call, batched under load."""

from __future__ import annotations

import asyncio

import pytest

from devstack.processes import free_port
from kit.errors import ServiceUnavailable, Unauthorized
from kit.redis import create_redis
from sso import keys
from sso.client import TokenValidator
from sso.service import Sso
from tests.sso.conftest import App, bearer, login, register


def _validator_without_broadcasts(app: App) -> TokenValidator:
    """A validator that hears nothing from the changes channel: only Redis can tell it a session ended."""
    sso = app.ctx.get(Sso)
    return TokenValidator(
        issuer=sso.validator.issuer, audience=sso.validator.audience, keys=sso.keystore.jwks,
        redis=app.ctx.redis,
    )  # fmt: skip


async def test_strict_sees_a_logout_at_once_without_any_message(app: App) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    validator = _validator_without_broadcasts(app)
    await validator.refresh_keys(force=True)
    assert (await validator.validate(tokens["access_token"], strict=True)).username == "alice"
    await app.http.post("/sso/logout", headers=bearer(tokens))
    with pytest.raises(Unauthorized):
        await validator.validate(tokens["access_token"], strict=True)
    # And it remembers: the non-strict path of the same validator refuses it from now on.
    with pytest.raises(Unauthorized):
        await validator.validate(tokens["access_token"])


async def test_strict_slides_the_session(app: App) -> None:
    user = await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    key = keys.session(user["id"], tokens["session_id"])
    before = int(await app.ctx.redis.hget(key, "last_seen_at") or 0)
    await asyncio.sleep(1.05)  # a touch within a second of the last slide leaves it (test_slide_step)
    await app.ctx.get(TokenValidator).validate(tokens["access_token"], strict=True)
    after = int(await app.ctx.redis.hget(key, "last_seen_at") or 0)
    assert after > before
    assert 899_000 < await app.ctx.redis.pttl(key) <= 900_000


async def test_two_hundred_concurrent_strict_validations(app: App) -> None:
    users = [f"user{i}" for i in range(40)]
    await asyncio.gather(*(register(app.http, u) for u in users))
    logins = await asyncio.gather(*(login(app.http, u) for u in users))
    validator = app.ctx.get(TokenValidator)
    principals = await asyncio.gather(
        *(validator.validate(logins[i % 40]["access_token"], strict=True) for i in range(200))
    )
    assert [p.username for p in principals] == [users[i % 40] for i in range(200)]
    # One of them logs out; concurrent checks of it fail while the others pass.
    await app.http.post("/sso/logout", headers=bearer(logins[0]))
    answers = await asyncio.gather(
        *(validator.validate(logins[i % 40]["access_token"], strict=True) for i in range(200)),
        return_exceptions=True,
    )
    for i, answer in enumerate(answers):
        assert isinstance(answer, Unauthorized) == (i % 40 == 0), (i, answer)


async def test_strict_checks_survive_a_script_flush(app: App) -> None:
    users = [f"user{i}" for i in range(10)]
    await asyncio.gather(*(register(app.http, u) for u in users))
    logins = await asyncio.gather(*(login(app.http, u) for u in users))
    await app.ctx.redis.script_flush()
    validator = app.ctx.get(TokenValidator)
    principals = await asyncio.gather(
        *(validator.validate(t["access_token"], strict=True) for t in logins * 10)
    )
    assert len(principals) == 100


async def test_strict_checks_answer_unavailable_when_redis_is_gone(app: App) -> None:
    await register(app.http, "alice")
    tokens = await login(app.http, "alice")
    sso = app.ctx.get(Sso)
    gone = create_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        validator = TokenValidator(
            issuer=sso.validator.issuer, audience=sso.validator.audience, keys=sso.keystore.jwks, redis=gone
        )
        await validator.refresh_keys(force=True)
        with pytest.raises(ServiceUnavailable) as caught:
            await validator.validate(tokens["access_token"], strict=True)
        assert caught.value.status_code == 503 and caught.value.code == "unavailable"
        # Non-strict checks need no Redis.
        assert (await validator.validate(tokens["access_token"])).username == "alice"
    finally:
        await gone.aclose()
