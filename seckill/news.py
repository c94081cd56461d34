"""seckill's pub/sub news, heard by every API process on one subscription.

Scripts and loops publish what changed (stock back or added, an event's end moved, orders written, paid,
cancelled); each process's in-memory state (the sold-out memory, the event cache, the order watch) registers a
handler per channel here. One connection per process whatever the number of handlers or waiting requests.

A message can be lost (a listener reconnecting, a node restarting): after every (re)subscription each
handler's ``reset`` runs, and each user of the news also bounds its staleness by a recheck of its own, so no
lost message keeps a state wrong for longer than that recheck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kit.context import Context
from kit.redis import PubSubSource

__all__ = ["News"]

log = logging.getLogger("peak.seckill")

_RECONNECT_S = 0.5
_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class _Handler:
    on_message: Callable[[str], None]
    reset: Callable[[], None]


class News:
    def __init__(self) -> None:
        self._handlers: dict[str, list[_Handler]] = {}
        self._closed = False
        # Set while subscribed: tests and waiters can tell a live listener from one reconnecting.
        self.subscribed = asyncio.Event()

    def on(self, channel: str, on_message: Callable[[str], None], reset: Callable[[], None]) -> None:
        """Call ``on_message(data)`` for every message on ``channel``, and ``reset()`` after each (re)subscription
        (messages may have been missed meanwhile). Register before ``listen`` starts."""
        self._handlers.setdefault(channel, []).append(_Handler(on_message, reset))

    async def listen(self, ctx: Context) -> None:
        if not self._handlers:
            return
        source = PubSubSource(ctx.settings.require("redis_url"))
        try:
            while not self._closed:
                client = source.client()
                try:
                    async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                        await pubsub.subscribe(*self._handlers)
                        await source.learn(client)
                        for handlers in self._handlers.values():
                            for handler in handlers:
                                handler.reset()
                        self.subscribed.set()
                        # redis-py may swallow a cancellation inside get_message, so a flag ends the loop too.
                        while not self._closed:
                            message = await pubsub.get_message(timeout=_POLL_S)
                            if message is not None:
                                self._dispatch(str(message["channel"]), str(message["data"]))
                except Exception as exc:
                    self.subscribed.clear()
                    source.failed()
                    log.warning("seckill news listener failed (%s); reconnecting to %s", exc, source.address)
                    await asyncio.sleep(_RECONNECT_S)
                finally:
                    with contextlib.suppress(Exception):
                        await client.aclose()
        finally:
            self.subscribed.clear()

    def _dispatch(self, channel: str, data: str) -> None:
        for handler in self._handlers.get(channel, ()):
            try:
                handler.on_message(data)
            except Exception:
                log.exception("seckill news handler failed on %s", channel)

    def close(self) -> None:
        self._closed = True
