"""The process is asked to stop: callbacks that must run at SIGTERM or SIGINT, before the server drains.

granian stops a worker by waiting for its open connections to finish, and only then runs the lifespan's
shutdown. A connection that never finishes by itself (a console's event stream) would hold the worker up for
ever. ``on_stop`` runs a callback as soon as the signal arrives, so such a connection can end.

The handler is installed at Python level, in front of whatever was there, and calls it after: granian's own
handler is registered on the event loop (``loop.add_signal_handler``), which learns of the signal through the
interpreter's wakeup file descriptor whatever the Python-level handler is, so it still runs.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["on_stop"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
_installed = False


def _chain(previous: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        for loop, callback in list(_callbacks):
            if not loop.is_closed():
                # A signal handler may interrupt the loop anywhere: hand the callback to the loop.
                loop.call_soon_threadsafe(callback)
        previous(signum, frame)

    return handler


def on_stop(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` on the running loop when the process gets SIGTERM or SIGINT (where a handler is
    installed for it: under granian always; a signal left to its default still just ends the process);
    returns the undo."""
    global _installed
    entry = (asyncio.get_running_loop(), callback)
    _callbacks.append(entry)
    if not _installed and threading.current_thread() is threading.main_thread():
        _installed = True
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, _chain(previous))

    def undo() -> None:
        if entry in _callbacks:
            _callbacks.remove(entry)

    return undo
