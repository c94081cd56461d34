"""The signals series in Redis: what every API process measured, for the last hours, whoever restarted.

Every PEAK_DEGRADE_SERIES_S (2 s) each API process appends one entry to the stream ``{degrade}:series`` (one
XADD, nothing else): its process id, the end of the interval ``at`` (ms, on a boundary of the interval, so
every process's entries of one interval share it), the interval's length ``dt``, the controller's last sample
(inflight, p99_ms, lag_ms, cpu, error_ratio) and per subsystem the interval's requests, 5xx answers and shed
answers (``degrade/rates.py``: from counters that exist, no per-request work). The XADD trims by time
(``MINID ~`` now - PEAK_DEGRADE_SERIES_KEEP_S): the last two hours stay whatever the number of processes, and
a stopped process's entries stay in the history. Redis down: the interval is skipped (its counts are lost,
the next entry covers the next interval only), one warning, one line when it writes again.

``read`` answers at most ``MAX_ENTRIES`` entries (the newest: an hour of 8 processes at 2 s); a bigger
answer is cut to the newest and says ``truncated``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from degrade import keys
from degrade.rates import Counts
from degrade.signals import Signals
from kit.context import context_of
from kit.errors import InvalidRequest, ServiceUnavailable
from kit.outage import store_outage
from kit.params import query_int, query_str
from kit.redis import RedisClient
from kit.responses import JSONResponse
from kit.routing import ApiRoute, route

__all__ = ["MAX_ENTRIES", "SeriesWriter", "read", "routes"]

log = logging.getLogger("peak.degrade")

MAX_ENTRIES = 15_000
_STREAM_ID = re.compile(r"[0-9]{1,16}(?:-[0-9]{1,19})?", re.ASCII)
_DEFAULT_INTERVAL_S = 2.0


class SeriesWriter:
    """This process's appender; ``wait_s`` says how long until the next boundary, ``append`` writes."""

    def __init__(self, process_id: str, counts: Counts, signals: Signals, *, every_s: float, keep_s: float):
        self.process_id = process_id
        self.counts = counts
        self.signals = signals
        self.every_ms = max(1, round(every_s * 1000))
        self.keep_ms = round(keep_s * 1000)
        self._since = time.monotonic()
        self._failing = False

    def wait_s(self) -> float:
        now_ms = time.time() * 1000
        boundary = (math.floor(now_ms / self.every_ms) + 1) * self.every_ms
        return (boundary - now_ms) / 1000

    def entry(self) -> dict[str, str]:
        now = time.monotonic()
        dt_ms = max(1, round((now - self._since) * 1000))
        self._since = now
        # The boundary just reached (a wake-up a little early still names it, a late one too).
        at = math.floor((time.time() * 1000 + 20) / self.every_ms) * self.every_ms
        sample = self.signals.last
        fields = {
            "p": self.process_id,
            "at": str(at),
            "dt": str(dt_ms),
            "iv": str(self.every_ms),
            "inflight": str(sample.inflight if sample else 0),
            "p99_ms": f"{sample.p99_ms if sample else 0.0:.3f}",
            "lag_ms": f"{sample.lag_ms if sample else 0.0:.3f}",
            "cpu": f"{sample.cpu if sample else 0.0:.3f}",
            "error_ratio": f"{sample.error_ratio if sample else 0.0:.4f}",
            "subs": orjson.dumps(self.counts.delta()).decode(),
        }
        self.counts.export_shed()
        return fields

    async def append(self, redis: RedisClient) -> bool:
        """One XADD; False (and a warning, once per outage) when Redis cannot take it."""
        fields = self.entry()
        min_id = int(time.time() * 1000) - self.keep_ms
        try:
            await redis.xadd(keys.SERIES, fields, minid=str(max(0, min_id)), approximate=True)  # type: ignore[arg-type]
        except Exception as exc:
            if not self._failing:
                self._failing = True
                if store_outage(exc) or isinstance(exc, RedisError):
                    log.warning(
                        "degrade series: Redis unreachable (%s); skipping intervals until it answers",
                        type(exc).__name__,
                    )
                else:
                    log.exception("degrade series: could not append")
            return False
        if self._failing:
            self._failing = False
            log.warning("degrade series: Redis answers again; appending resumes")
        return True


def _number(fields: dict[str, str], name: str) -> float:
    value = float(fields.get(name, "0"))
    if not math.isfinite(value):
        raise ValueError(name)
    return value


def _body(rows: Sequence[tuple[str, dict[str, str]]], last_id: str, truncated: bool) -> dict[str, Any]:
    processes: dict[str, list[list[float]]] = {}
    # at -> subsystem -> [requests/s, 5xx/s, shed/s], summed over the processes' entries of that interval.
    intervals: dict[int, dict[str, list[float]]] = {}
    interval_ms = _DEFAULT_INTERVAL_S * 1000
    for _, fields in rows:
        try:
            at = int(fields["at"])
            dt_s = max(0.001, _number(fields, "dt") / 1000)
            point = [float(at)] + [
                _number(fields, n) for n in ("inflight", "p99_ms", "lag_ms", "cpu", "error_ratio")
            ]
            subs = orjson.loads(fields.get("subs", "{}"))
            counts = {str(k): [float(x) for x in v[:3]] for k, v in subs.items() if len(v) >= 3}
            interval_ms = _number(fields, "iv") or interval_ms
        except (KeyError, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
            continue  # not an entry this module wrote
        processes.setdefault(fields.get("p", "?"), []).append(point)
        slot = intervals.setdefault(at, {})
        for name, (requests, errors, shed) in counts.items():
            rates = slot.setdefault(name, [0.0, 0.0, 0.0])
            rates[0] += requests / dt_s
            rates[1] += errors / dt_s
            rates[2] += shed / dt_s
    subsystems: dict[str, list[list[float]]] = {}
    for at in sorted(intervals):
        for name, (requests, errors, shed) in intervals[at].items():
            subsystems.setdefault(name, []).append([at, round(requests, 3), round(errors, 3), round(shed, 3)])
    for points in processes.values():
        for point in points:
            point[0] = int(point[0])
    return {
        "interval_s": interval_ms / 1000,
        "last_id": last_id,
        "truncated": truncated,
        "processes": dict(sorted(processes.items())),
        "subsystems": dict(sorted(subsystems.items())),
    }


async def read(
    redis: RedisClient, *, since_ms: int | None = None, after: str | None = None
) -> dict[str, Any]:
    """The series since ``since_ms`` (default: the last hour), or only the entries after the stream id
    ``after``; at most ``MAX_ENTRIES`` of them. ``last_id`` is what to pass as ``after`` next."""
    if after is not None:
        if not _STREAM_ID.fullmatch(after):
            raise InvalidRequest("after must be a series entry id (<ms>-<seq>), as last_id answers it")
        rows: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
            keys.SERIES, min="(" + after, max="+", count=MAX_ENTRIES + 1
        )
        truncated = len(rows) > MAX_ENTRIES
        rows = rows[:MAX_ENTRIES]
        last_id = rows[-1][0] if rows else after
    else:
        start = int(time.time() * 1000) - 3_600_000 if since_ms is None else max(0, since_ms)
        rows = await redis.xrevrange(keys.SERIES, max="+", min=str(start), count=MAX_ENTRIES + 1)  # type: ignore[assignment]
        truncated = len(rows) > MAX_ENTRIES
        rows = rows[:MAX_ENTRIES][::-1]
        last_id = rows[-1][0] if rows else f"{start}-0"
    return _body(rows, last_id, truncated)


def routes(authorize: Callable[[Request], Awaitable[object]]) -> list[ApiRoute]:
    async def get_series(request: Request) -> Response:
        await authorize(request)
        minutes = query_int(request, "minutes", default=60, low=1, high=120)
        after = query_str(request, "after", max_length=40)
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise InvalidRequest("query parameter 'after' must be a series entry id (<ms>-<seq>)")
        since_ms = int(time.time() * 1000) - minutes * 60_000
        try:
            body = await read(context_of(request).redis, since_ms=since_ms, after=after)
        except RedisError:
            raise ServiceUnavailable(
                "the series store (Redis) cannot be reached", code="store_unreachable"
            ) from None
        return JSONResponse(body)

    return [
        route(
            "/degrade/series", get_series, summary="Signals per process and rates per subsystem, last hour(s)",
            auth=["admin"],
            query={"minutes": "1-120 (default 60)", "after": "a last_id: only newer entries"},
            errors={401: ["unauthenticated"], 403: ["forbidden"], 422: ["invalid_request"],
                    503: ["store_unreachable"]},
            responses={200: {"type": "object"}},
        ),
    ]  # fmt: skip
