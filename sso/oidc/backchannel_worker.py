"""The `peak worker` loop of back-channel logout: the journal reader (``backchannel_feed``) and the deliveries
(``backchannel``), each waiting out a Redis outage by itself (``kit.outage``) and resuming where it was: the
cursor, the outboxes and the pending deliveries are all in Redis.

The clients table and the signing keys are read from PostgreSQL at start and again every few seconds; while
PostgreSQL is away the loop goes on with what it has.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from kit.context import Context
from kit.outage import Outage
from sso.clients import Clients
from sso.keystore import DEFAULT_OIDC_ALGORITHM, KeyStore
from sso.oidc.backchannel import BackchannelDelivery
from sso.oidc.backchannel_feed import BackchannelFeed
from sso.oidc.logout_token import LogoutTokens
from sso.settings import SsoSettings

__all__ = ["backchannel_loop"]

log = logging.getLogger("peak.sso")

# How often the journals are read: a logout reaches the delivery stream within about this long.
_STEP_S = 0.2
_CLIENTS_RELOAD_S = 5.0


class _ClientTable:
    """The clients' back-channel URIs and ID token algorithms from memory, reloaded every few seconds (a failed reload keeps them)."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients
        self._loaded_at: float | None = None

    async def refresh(self) -> None:
        if self._loaded_at is not None and time.monotonic() - self._loaded_at < _CLIENTS_RELOAD_S:
            return
        try:
            await self._clients.reload()
        except Exception as exc:
            if self._loaded_at is None:
                raise  # nothing to go on with yet: the caller waits the outage out
            log.warning("back-channel logout: could not reload the clients (%s)", type(exc).__name__)
        self._loaded_at = time.monotonic()

    def uri(self, client_id: str) -> str | None:
        client = self._clients.get(client_id)
        return None if client is None else client.backchannel_logout_uri

    def algorithm(self, client_id: str) -> str:
        client = self._clients.get(client_id)
        return DEFAULT_OIDC_ALGORITHM if client is None else client.id_token_signed_response_alg


async def backchannel_loop(ctx: Context) -> None:
    settings = ctx.settings.of(SsoSettings)
    store = KeyStore(
        ctx.db,
        algorithm=settings.algorithm,
        secret_key=ctx.settings.secret_key,
        access_token_ttl_s=settings.access_token_ttl_s,
    )
    table = _ClientTable(Clients(ctx.db))
    tokens = LogoutTokens(store, issuer=settings.issuer_for(ctx.settings), algorithm_of=table.algorithm)
    feed = BackchannelFeed(ctx.redis, idle_check_s=settings.backchannel_idle_check_s)
    cap_s = ctx.settings.outage_retry_max_s
    reading = Outage(
        log, "back-channel logout reader", "ended sessions wait in the revocation journals and are told "
        "to their clients once it is back", cap_s=cap_s,
    )  # fmt: skip
    sending = Outage(
        log, "back-channel logout delivery", "logout tokens wait in their stream; none is counted as an "
        "attempt meanwhile", cap_s=cap_s,
    )  # fmt: skip

    async def read() -> None:
        await table.refresh()
        await feed.step(table.uri)

    async with httpx.AsyncClient(follow_redirects=False, timeout=settings.backchannel_timeout_s) as http:
        delivery = BackchannelDelivery(ctx.redis, settings, tokens=tokens, client_uri=table.uri, http=http)

        async def send() -> None:
            await table.refresh()
            await tokens.check()
            await delivery.step()

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(reading.every(_STEP_S, read), name="sso-backchannel-read")
                group.create_task(sending.every(0.0, send), name="sso-backchannel-send")
        finally:
            await delivery.close()
