"""sso subsystem: accounts, Redis sessions, JWT access tokens with JWKS, introspection and a token validator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from kit.component import Component, Role
from kit.context import Context
from sso.accounts import Accounts
from sso.cli import add_commands
from sso.client import TokenValidator
from sso.clients import Clients
from sso.keystore import KeyStore
from sso.passwords import Passwords
from sso.routes import routes
from sso.service import Sso
from sso.sessions import Sessions
from sso.throttle import LoginThrottle
from sso.tokens import Signer

__all__ = ["component"]

log = logging.getLogger("peak.sso")

# A missed "keys changed" message cannot leave a process signing with a retired key for longer than this.
_SIGNING_KEY_CHECK_S = 10.0


@contextlib.asynccontextmanager
async def _services(ctx: Context, role: Role) -> AsyncIterator[None]:
    settings = ctx.settings
    keystore = KeyStore(
        ctx.db,
        algorithm=settings.sso_algorithm,
        secret_key=settings.secret_key,
        access_token_ttl_s=settings.sso_access_token_ttl_s,
    )
    validator = TokenValidator(
        issuer=settings.issuer(),
        audience=settings.sso_audience,
        keys=keystore.jwks,
        redis=ctx.redis,
        redis_url=settings.redis_url,
        scripts=ctx.scripts,
        idle_timeout_s=settings.sso_idle_timeout_s,
    )
    ctx.put(validator)
    if role != "api":
        async with validator.running():
            yield
        return
    settings.require("secret_key")  # the API signs tokens: fail at start, naming the variable
    signer = Signer(
        keystore,
        issuer=settings.issuer(),
        audience=settings.sso_audience,
        ttl_s=settings.sso_access_token_ttl_s,
    )
    await signer.load()
    passwords = Passwords(settings)
    sso = Sso(
        settings=settings,
        accounts=Accounts(ctx.db),
        passwords=passwords,
        sessions=Sessions(ctx.redis, ctx.scripts, settings),
        throttle=LoginThrottle(ctx.redis, ctx.scripts, settings),
        keystore=keystore,
        signer=signer,
        clients=Clients(ctx.db),
        validator=validator,
    )
    await sso.clients.reload()
    ctx.put(sso)

    async def on_change(what: str) -> None:
        if what == "k":
            sso.forget_jwks()
            await signer.load()
        elif what == "c":
            await sso.clients.reload()

    async def watch_signing_key() -> None:
        while True:
            await asyncio.sleep(_SIGNING_KEY_CHECK_S)
            try:
                if await keystore.current_kid() != signer.kid:
                    await on_change("k")
            except Exception as exc:
                log.warning("could not check the signing key: %s", exc)

    validator.on_change(on_change)
    watcher = asyncio.create_task(watch_signing_key(), name="sso-signing-key")
    try:
        async with validator.running():
            yield
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        passwords.close()


def component() -> Component:
    return Component(name="sso", routes=routes(), migrations="sso", services=[_services], cli=add_commands)
