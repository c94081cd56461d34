"""Prometheus metrics: request count and latency by route template and status, and fleet-wide gauges.

Under several server processes, ``PROMETHEUS_MULTIPROC_DIR`` (set by `peak up`) makes /metrics add them up.

A ``FleetGauge`` holds a value that is the same for the whole fleet because it is read from a shared store
(an event's queue depth in Redis) right before a scrape, by the components' ``gauges`` refreshers. It is
exported by the scraping process alone and never written to the multiprocess files: there N processes would
add up the same figure N times (``sum``), or a label gone in one process would live on in another's file
(``mostrecent``). A value not refreshed within ``FLEET_MAX_AGE_S`` is left out: a scrape while Redis is down
answers with every other metric and without those gauges, rather than with stale figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from kit.context import Context

__all__ = [
    "FLEET_MAX_AGE_S",
    "REFRESH_EVERY_S",
    "REFRESH_TIMEOUT_S",
    "REQUESTS",
    "REQUEST_SECONDS",
    "FleetGauge",
    "metrics_endpoint",
    "refresh_gauges",
]

log = logging.getLogger("peak.metrics")

REQUESTS = Counter("peak_requests_total", "HTTP requests", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "peak_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# A crowd scraping /metrics at once costs the stores one refresh per process per this interval.
REFRESH_EVERY_S = 1.0
# A refresh still running after this is abandoned: the scrape answers without what it would have set.
REFRESH_TIMEOUT_S = 1.0
FLEET_MAX_AGE_S = 3.0


class FleetGauge:
    """A labelled gauge whose values ``replace`` sets all at once (labels not given are dropped)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        kind: Literal["gauge", "counter"] = "gauge",
    ) -> None:
        # A counter read from a store (a total that only grows): exported as a counter, for rate().
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._at = 0.0
        _FLEET.gauges.append(self)

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        self._values = dict(values)
        self._at = time.monotonic()

    def clear(self) -> None:
        self._values = {}
        self._at = 0.0

    def values(self) -> dict[tuple[str, ...], float]:
        """What a scrape exports now (nothing once older than ``FLEET_MAX_AGE_S``)."""
        return self._values if time.monotonic() - self._at <= FLEET_MAX_AGE_S else {}

    def metric(self) -> Metric:
        family: GaugeMetricFamily | CounterMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        else:
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values().items()):
            family.add_metric(list(labels), value)
        return family


class _FleetCollector(Collector):
    def __init__(self) -> None:
        self.gauges: list[FleetGauge] = []

    def collect(self) -> Iterable[Metric]:
        return [g.metric() for g in self.gauges]


_FLEET = _FleetCollector()
REGISTRY.register(_FLEET)


class _Refresher:
    """Runs every component's gauge refreshers, once per ``REFRESH_EVERY_S`` at most; callers meanwhile share
    the run in progress or the last one."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._done_at = -REFRESH_EVERY_S
        self._failing: set[str] = set()

    async def __call__(self, ctx: Context) -> None:
        if self._task is None:
            if time.monotonic() - self._done_at < REFRESH_EVERY_S:
                return
            self._task = asyncio.create_task(self._run(ctx))
        task = self._task
        # asyncio.wait: a scraper that goes away does not cancel the run the others wait for.
        await asyncio.wait({task}, timeout=REFRESH_TIMEOUT_S)
        if not task.done():
            task.cancel()
            if "(timeout)" not in self._failing:
                self._failing.add("(timeout)")
                log.warning("metrics: the gauges took over %g s to refresh; left out", REFRESH_TIMEOUT_S)
        elif not task.cancelled() and task.exception() is None:
            self._failing.discard("(timeout)")

    async def _run(self, ctx: Context) -> None:
        refreshers = [
            (f"{c.name}.{getattr(g, '__name__', 'gauges')}", g) for c in ctx.components for g in c.gauges
        ]
        try:
            results = await asyncio.gather(*(g(ctx) for _, g in refreshers), return_exceptions=True)
        finally:
            self._task = None
            self._done_at = time.monotonic()
        for (name, _), result in zip(refreshers, results, strict=True):
            if isinstance(result, BaseException):
                if name not in self._failing:
                    # The class only: a store error's text may name hosts; once per failing streak.
                    log.warning(
                        "metrics: %s could not refresh (%s); its gauges are left out",
                        name,
                        type(result).__name__,
                    )
                    self._failing.add(name)
            elif name in self._failing:
                log.warning("metrics: %s refreshes again", name)
                self._failing.discard(name)


async def refresh_gauges(ctx: Context) -> None:
    """Run the components' gauge refreshers of this process's context (see ``_Refresher``)."""
    refresher = ctx.find(_Refresher)
    if refresher is None:
        if not any(c.gauges for c in ctx.components):
            return
        refresher = _Refresher()
        ctx.put(refresher)
    await refresher(ctx)


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(_FLEET)
    return registry


async def metrics_endpoint(request: Request) -> Response:
    ctx: Context | None = request.scope.get("state", {}).get("ctx")
    if ctx is not None:
        await refresh_gauges(ctx)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
