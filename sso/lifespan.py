"""What SSO starts in every process: the token validator; in the API also the signer and the SSO flows,
with a watch on the signing key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from kit.admins import AdminTokens
from kit.component import Role
from kit.context import Context
from kit.tasks import cancel_loops
from sso import feed
from sso.accounts import Accounts
from sso.client import TokenValidator
from sso.client.feed import RevocationFeed
from sso.clients import Clients
from sso.csrf import CsrfGuard
from sso.keystore import KeyStore
from sso.oidc.codes import CodeSeal
from sso.passwords import Passwords
from sso.service import Sso
from sso.sessions import Sessions
from sso.settings import SsoSettings
from sso.throttle import LoginThrottle
from sso.tokens import Signer, rotation_key

__all__ = ["services"]

log = logging.getLogger("peak.sso")

# A missed "keys changed" message cannot leave a process signing with retired keys for longer than this.
_SIGNING_KEY_CHECK_S = 10.0


def _revocation_feed(sso_settings: SsoSettings) -> RevocationFeed | None:
    if not sso_settings.revocation_feed:
        return None
    return RevocationFeed(
        sso_settings.revocation_feed,
        client_id=sso_settings.revocation_feed_client or "",
        client_secret=sso_settings.revocation_feed_secret or "",
    )


@contextlib.asynccontextmanager
async def services(ctx: Context, role: Role) -> AsyncIterator[None]:
    settings = ctx.settings
    sso_settings = settings.of(SsoSettings)
    issuer = sso_settings.issuer_for(settings)
    keystore = KeyStore(
        ctx.db,
        algorithm=sso_settings.algorithm,
        secret_key=settings.secret_key,
        access_token_ttl_s=sso_settings.access_token_ttl_s,
    )
    validator = TokenValidator(
        issuer=issuer,
        audience=sso_settings.audience,
        keys=keystore.jwks,
        redis=ctx.redis,
        redis_url=settings.redis_url,
        idle_timeout_s=sso_settings.idle_timeout_s,
        # The API serves the feed from Redis, so only other processes may follow it.
        revocation_feed=_revocation_feed(sso_settings) if role != "api" else None,
    )
    ctx.put(validator)
    # Read once: a malformed PEAK_ADMIN_TOKENS stops the process here, naming the variable.
    AdminTokens.of(ctx)
    if role != "api":
        async with validator.running():
            yield
        return
    secret_key = settings.require("secret_key")  # the API signs tokens: fail at start, naming the variable
    ctx.put(CsrfGuard(settings.public_base_url(), force_secure=sso_settings.cookie_secure))
    signer = Signer(
        keystore, issuer=issuer, audience=sso_settings.audience, ttl_s=sso_settings.access_token_ttl_s
    )
    await signer.load()
    passwords = Passwords(sso_settings)
    sso = Sso(
        settings=sso_settings,
        accounts=Accounts(ctx.db),
        passwords=passwords,
        sessions=Sessions(ctx.redis, sso_settings, rotation_key=rotation_key(secret_key)),
        throttle=LoginThrottle(ctx.redis, sso_settings),
        keystore=keystore,
        signer=signer,
        clients=Clients(ctx.db),
        validator=validator,
        codes=CodeSeal(secret_key),
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
                if await signer.stale():
                    await on_change("k")
            except Exception as exc:
                log.warning("could not check the signing key: %s", exc)

    validator.on_change(on_change)
    watcher = asyncio.create_task(watch_signing_key(), name="sso-signing-key")
    try:
        async with validator.running(), feed.serving(ctx, validator.revocations):
            yield
    finally:
        await cancel_loops([watcher])
        passwords.close()
