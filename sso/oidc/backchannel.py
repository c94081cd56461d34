"""Back-channel logout, second half: the workers POST a signed ``logout_token`` to each client that must know.

Deliveries are entries of ``keys.BACKCHANNEL_STREAM`` (``backchannel_feed`` adds them), read by one consumer
group: each entry goes to one worker, which POSTs ``logout_token=<JWT>`` form-encoded to the client's
``backchannel_logout_uri`` (no redirects followed; the whole attempt bounded by PEAK_SSO_BACKCHANNEL_TIMEOUT_S)
and acknowledges and deletes the entry once the client answers 2xx.

A failed attempt leaves the entry pending. Redis counts its deliveries and how long it has waited since the last
one, and any worker's retry scan XCLAIMs it again once it has waited ``delay_s(deliveries)``: the retry base
doubled per attempt up to PEAK_SSO_BACKCHANNEL_RETRY_MAX_S, and never less than the timeout plus a second, so
no attempt still under way is claimed by another worker. XCLAIM with that idle time is atomic: one worker wins.
The same scan takes over what a dead worker was delivering. With the defaults (3 s, 2 s, 60 s, 12 attempts) the
attempts spread over about 7 minutes (4+4+8+16+32+6*60 s): a client down for 90 s gets its token once it is
back. After PEAK_SSO_BACKCHANNEL_ATTEMPTS attempts, or at once when the client refuses the token (a 4xx other
than 408 and 429: every attempt would say the same), the entry becomes a dead letter (``keys.BACKCHANNEL_DEAD``,
`peak sso backchannel` lists and re-queues them).

At least once: an answer lost after the client took the token, or a worker killed between the POST and the
acknowledgement, sends it again (a new token, a new ``jti``); the logout of an ended session is a no-op for the
client. Never on a request path: only `peak worker` runs this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import httpx
from redis.exceptions import ResponseError

from kit.redis import RedisClient
from kit.tasks import cancel_loops
from sso import keys
from sso.oidc.backchannel_feed import ClientUri
from sso.oidc.logout_token import LogoutTokens
from sso.settings import SsoSettings

__all__ = ["BackchannelDelivery", "Outcome"]

log = logging.getLogger("peak.sso")

# Attempts under way per worker at most.
_CONCURRENCY = 32
_BLOCK_MS = 500
_RETRY_SCAN = 100
_RETRY_PAGES = 5
_PERMANENT_4XX_EXCEPT = (408, 429)
_HEADERS = {"Cache-Control": "no-store"}

Outcome = str  # "delivered", "retry", "dead", "dropped"


class BackchannelDelivery:
    def __init__(
        self, redis: RedisClient, settings: SsoSettings, *, tokens: LogoutTokens, client_uri: ClientUri,
        http: httpx.AsyncClient,
    ) -> None:  # fmt: skip
        self._redis = redis
        self._timeout_s = settings.backchannel_timeout_s
        self._base_s = settings.backchannel_retry_base_s
        self._max_s = settings.backchannel_retry_max_s
        self._attempts = settings.backchannel_attempts
        self._tokens = tokens
        self._client_uri = client_uri
        self._http = http
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._grouped = False
        self._inflight: dict[str, asyncio.Task[Outcome]] = {}
        self._scan_from = "-"

    def delay_s(self, deliveries: int) -> float:
        """How long an entry delivered ``deliveries`` times waits after its last attempt before the next."""
        backoff = self._base_s * 2.0 ** max(0, deliveries - 1)
        return max(self._timeout_s + 1.0, min(self._max_s, backoff))

    async def _ensure_group(self) -> None:
        if self._grouped:
            return
        try:
            await self._redis.xgroup_create(
                keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped = True

    async def step(self) -> None:
        """Start due retries and new deliveries (waiting up to half a second for one)."""
        try:
            await self._ensure_group()
            await self._retry_due()
            await self._read_new()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._grouped = False  # Redis lost the stream (a restart without its data): create it again

    def _free(self) -> int:
        for entry_id in [e for e, task in self._inflight.items() if task.done()]:
            del self._inflight[entry_id]
        return _CONCURRENCY - len(self._inflight)

    async def _read_new(self) -> None:
        free = self._free()
        if free <= 0:
            await asyncio.sleep(0.05)
            return
        reply: Any = await self._redis.xreadgroup(
            keys.BACKCHANNEL_GROUP, self.consumer, {keys.BACKCHANNEL_STREAM: ">"}, count=free, block=_BLOCK_MS
        )
        for _, entries in reply or ():
            for entry_id, fields in entries:
                self._start(str(entry_id), fields, 1)

    async def _retry_due(self) -> None:
        """Claim the pending entries whose pause is over. The pending list is walked a few pages per step from
        where the last step stopped, so entries not yet due at its head never starve those behind them."""
        free = self._free()
        for _ in range(_RETRY_PAGES):
            if free <= 0:
                return
            pending: list[Any] = await self._redis.xpending_range(
                keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP, min=self._scan_from, max="+", count=_RETRY_SCAN,
                idle=int(self.delay_s(1) * 1000),
            )  # fmt: skip
            self._scan_from = "-" if len(pending) < _RETRY_SCAN else f"({pending[-1]['message_id']}"
            free = await self._claim_due(pending, free)
            if self._scan_from == "-":
                return

    async def _claim_due(self, pending: list[Any], free: int) -> int:
        for entry in pending:
            if free <= 0:
                break
            entry_id, deliveries = str(entry["message_id"]), int(entry["times_delivered"])
            wait_ms = int(self.delay_s(deliveries) * 1000)
            if entry_id in self._inflight or int(entry["time_since_delivered"]) < wait_ms:
                continue
            claimed: list[Any] = await self._redis.xclaim(
                keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP, self.consumer, wait_ms, [entry_id]
            )
            for claimed_id, fields in claimed:
                if fields:
                    self._start(str(claimed_id), fields, deliveries + 1)
                    free -= 1
                else:
                    await self._ack(str(claimed_id))
        return free

    def _start(self, entry_id: str, fields: dict[str, str], attempt: int) -> None:
        self._inflight[entry_id] = asyncio.create_task(
            self._guarded(entry_id, fields, attempt), name=f"sso-backchannel-{entry_id}"
        )

    async def _guarded(self, entry_id: str, fields: dict[str, str], attempt: int) -> Outcome:
        try:
            return await self.attempt(entry_id, fields, attempt)
        except (
            Exception
        ) as exc:  # Redis gone at the acknowledgement: the entry stays pending, to be sent again
            log.warning("back-channel logout %s left pending: %s", entry_id, type(exc).__name__)
            return "retry"

    async def attempt(self, entry_id: str, fields: dict[str, str], attempt: int) -> Outcome:
        """One delivery attempt (the ``attempt``-th) of one entry, and what became of it."""
        client_id, sid, sub = fields.get("client", ""), fields.get("sid", ""), fields.get("sub", "")
        uri = self._client_uri(client_id)
        if uri is None:  # the client was removed or has no back-channel URI any more: nobody to tell
            await self._ack(entry_id)
            return "dropped"
        reason = ""
        try:
            token = await self._tokens.token(client_id=client_id, sub=sub, sid=sid)
            async with (
                asyncio.timeout(self._timeout_s),
                # The answer's body is never read: only its status matters, and a client cannot make it big.
                self._http.stream("POST", uri, data={"logout_token": token}, headers=_HEADERS) as response,
            ):
                status = response.status_code
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            reason = type(exc).__name__
        else:
            if 200 <= status < 300:
                await self._ack(entry_id)
                return "delivered"
            reason = f"HTTP {status}"
            if 400 <= status < 500 and status not in _PERMANENT_4XX_EXCEPT:
                await self._dead(entry_id, fields, uri, attempt, reason)
                return "dead"
        if attempt >= self._attempts:
            await self._dead(entry_id, fields, uri, attempt, reason)
            return "dead"
        log.info(
            "back-channel logout to client %s failed (%s, attempt %d of %d); retrying in %.1f s",
            client_id, reason, attempt, self._attempts, self.delay_s(attempt),
        )  # fmt: skip
        return "retry"

    async def _ack(self, entry_id: str) -> None:
        await self._redis.xack(keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP, entry_id)
        await self._redis.xdel(keys.BACKCHANNEL_STREAM, entry_id)

    async def _dead(
        self, entry_id: str, fields: dict[str, str], uri: str, attempts: int, reason: str
    ) -> None:
        # Dead-lettered first, acknowledged after: a crash between them keeps it twice, never loses it.
        log.error(
            "back-channel logout to client %s dead-lettered after %d attempts (%s); `peak sso backchannel` lists"
            " it", fields.get("client", ""), attempts, reason,
        )  # fmt: skip
        await self._redis.xadd(
            keys.BACKCHANNEL_DEAD,
            {"sid": fields.get("sid", ""), "sub": fields.get("sub", ""), "client": fields.get("client", ""),
             "uri": uri, "attempts": str(attempts), "reason": reason, "at": str(int(time.time() * 1000))},
            maxlen=keys.BACKCHANNEL_DEAD_KEPT, approximate=True,
        )  # fmt: skip
        await self._ack(entry_id)

    async def close(self) -> None:
        """Stop the attempts under way (their entries stay pending: another worker, or this one's next start,
        takes them over)."""
        await cancel_loops(self._inflight.values())
        self._inflight.clear()
