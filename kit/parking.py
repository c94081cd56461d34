"""Waits a request makes by choice (a long poll), told apart from waits for lack of capacity.

A handler that parks a request on purpose (``GET /seckill/orders/{id}?wait=25``) wraps the wait in
``parked(scope)``. A middleware that measures load (the degradation controller's) puts its ``Parking`` in the
scope; while a request is parked it is not counted as in flight, and the time parked is taken off its latency
(read back with ``parked_s``). Without such a middleware ``parked`` does nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

__all__ = ["PARKED_S_KEY", "PARKING_KEY", "Parking", "parked"]

PARKING_KEY = "peak.parking"
PARKED_S_KEY = "peak.parked_s"


class Parking(Protocol):
    parked: int


@contextlib.contextmanager
def parked(scope: MutableMapping[str, Any]) -> Iterator[None]:
    parking: Parking | None = scope.get(PARKING_KEY)
    start = time.perf_counter()
    if parking is not None:
        parking.parked += 1
    try:
        yield
    finally:
        if parking is not None:
            parking.parked -= 1
        scope[PARKED_S_KEY] = scope.get(PARKED_S_KEY, 0.0) + time.perf_counter() - start
