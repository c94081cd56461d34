"""A validator's revocations from peak's HTTP feed (``GET /sso/revocations``), for one that cannot reach Redis.

``RevocationFeed.follow`` reads the feed from its start (everything the journals keep: longer than any token
lives), then long-polls it from the answered cursor, so a logout reaches the validator within about a round
trip. A cursor the feed no longer knows (410, after the validator was cut off for about 1000 s) makes it read
from the start again and report the gap, so that the validator verifies its cached tokens again. The feed out
of reach (or refusing the credentials) is retried with a pause growing up to ``_MAX_PAUSE_S``; meanwhile the
tokens known stay valid as before, which is what the Redis listener does while Redis is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["RevocationFeed"]

log = logging.getLogger("peak.sso")

_MAX_PAUSE_S = 5.0
_LIMIT = 1000


class RevocationFeed:
    def __init__(self, url: str, *, client_id: str, client_secret: str, wait_s: int = 25) -> None:
        if not 1 <= wait_s <= 30:
            raise ValueError("wait_s must be 1..30")
        self.url = url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._wait_s = wait_s
        self._cursor: str | None = None
        self._more = True
        # Set once the feed has been read from its start (every revocation a live token may have) after a gap.
        self.caught_up = asyncio.Event()

    async def follow(self, apply: Callable[[list[str]], None], on_gap: Callable[[], None]) -> None:
        """Forever: each answer's entries go to ``apply`` as changes-channel words (``s:<sid>``, ``j:<jti>``,
        ``u:<user id>:<version>``); ``on_gap`` when the feed could not say what was revoked meanwhile."""
        pause_s = 0.0
        async with httpx.AsyncClient(timeout=self._wait_s + 10.0, auth=self._auth) as http:
            while True:
                try:
                    await self._poll(http, apply, on_gap)
                    if pause_s:
                        log.warning("the revocation feed %s answers again", self.url)
                    pause_s = 0.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not pause_s:
                        log.warning(
                            "the revocation feed %s cannot be read (%s); trying again with a pause growing up to"
                            " %g s", self.url, type(exc).__name__, _MAX_PAUSE_S,
                        )  # fmt: skip
                    pause_s = min(_MAX_PAUSE_S, max(0.2, pause_s * 2))
                    await asyncio.sleep(pause_s)

    async def _poll(
        self, http: httpx.AsyncClient, apply: Callable[[list[str]], None], on_gap: Callable[[], None]
    ) -> None:
        params: dict[str, str | int] = {"limit": _LIMIT}
        if self._cursor is not None:
            params["since"] = self._cursor
            if not self._more:
                params["wait"] = self._wait_s
        response = await http.get(self.url, params=params)
        if response.status_code == 410:
            self._cursor, self._more = None, True
            self.caught_up.clear()
            on_gap()
            return
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        words = [f"s:{entry['sid']}" for entry in body.get("revoked", [])]
        words += [f"j:{entry['jti']}" for entry in body.get("jti", [])]
        words += [f"u:{entry['sub']}:{entry['version']}" for entry in body.get("accounts", [])]
        apply(words)
        self._cursor, self._more = str(body["cursor"]), bool(body.get("more"))
        if not self._more:
            self.caught_up.set()
