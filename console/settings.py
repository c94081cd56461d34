"""The ops console's settings (``PEAK_CONSOLE_*``): ``ctx.settings.of(ConsoleSettings)``, read once when the
console service starts."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import setting

__all__ = ["ConsoleSettings"]


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    max_streams: int = setting(
        "PEAK_CONSOLE_MAX_STREAMS", 50, "live console streams one API process serves at once (503 after)",
        low=1, high=1000,
    )  # fmt: skip
    queue_events: int = setting(
        "PEAK_CONSOLE_QUEUE_EVENTS", 200,
        "events waiting for one slow console before its stream is dropped (the page reconnects)",
        low=10, high=100000,
    )  # fmt: skip
    session_check_s: float = setting(
        "PEAK_CONSOLE_SESSION_CHECK_S", 15.0,
        "how often an open stream checks its session again (a logged-out or demoted admin's stream ends)",
        low=0.1, high=300,
    )  # fmt: skip
