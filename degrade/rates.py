"""Per-subsystem counts of this process (requests, 5xx answers, shed answers), read from counters that exist.

Nothing here runs per request: requests and 5xx come from the kit's ``peak_requests_total`` (by route
template, mapped to its subsystem by the first path segment, as the board maps a request), shed answers from
``board.shed_answers`` (the middleware's own count). Read once per series interval and before a scrape.

5xx answers include the 503 ``degraded`` of a shed route without a fallback: that is what clients got.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from degrade.board import Board
from kit.context import Context
from kit.metrics import REQUESTS

__all__ = ["SHED_TOTAL", "Counts", "Totals", "export_shed_answers"]

SHED_TOTAL = Counter(
    "peak_degrade_shed_total",
    "Answers of a shed subsystem (fully or partially shed), fallbacks included",
    ["subsystem"],
)

# subsystem -> [requests, 5xx answers, shed answers] since the process started.
Totals = dict[str, list[int]]

_SAMPLE = "peak_requests_total"


class Counts:
    def __init__(self, board: Board) -> None:
        self._board = board
        self._route_of: dict[str, str | None] = {}
        self._last = self.totals()
        self._shed_exported: dict[str, int] = {}

    def _subsystem(self, route: str) -> str | None:
        name = self._route_of.get(route, "")
        if name == "":
            segment = route.lstrip("/").split("/", 1)[0]
            name = self._board.prefixes.get(segment)
            # Bounded: the label values are route templates (and "unmatched"), never raw paths.
            self._route_of[route] = name
        return name

    def shed_answers(self) -> Mapping[str, int]:
        # Area A's board counts them; an older board has none.
        answers: Mapping[str, int] = getattr(self._board, "shed_answers", {})
        return answers

    def totals(self) -> Totals:
        out: Totals = {name: [0, 0, 0] for name in self._board.subsystems}
        for metric in REQUESTS.collect():
            for sample in metric.samples:
                if sample.name != _SAMPLE:
                    continue
                name = self._subsystem(sample.labels.get("route", ""))
                if name is None or name not in out:
                    continue
                row = out[name]
                n = int(sample.value)
                row[0] += n
                if sample.labels.get("status", "").startswith("5"):
                    row[1] += n
        for name, n in self.shed_answers().items():
            if name in out:
                out[name][2] = int(n)
        return out

    def delta(self) -> Totals:
        """The counts since the last call (the first: since this object was made, at the service's start)."""
        now = self.totals()
        last = self._last
        self._last = now
        return {
            name: [max(0, v - w) for v, w in zip(row, last.get(name, [0, 0, 0]), strict=True)]
            for name, row in now.items()
        }

    def export_shed(self) -> None:
        """Bring ``peak_degrade_shed_total`` up to ``board.shed_answers`` (the middleware never touches it)."""
        for name, n in list(self.shed_answers().items()):
            done = self._shed_exported.get(name, 0)
            if n > done:
                SHED_TOTAL.labels(name).inc(n - done)
                self._shed_exported[name] = n


async def export_shed_answers(ctx: Context) -> None:
    """The degrade component's gauge refresher: ``peak_degrade_shed_total`` up to date at each scrape."""
    counts = ctx.find(Counts)
    if counts is not None:
        counts.export_shed()
