"""Seckill's answers that are errors, and the one place where script return codes become them."""

from __future__ import annotations

from kit.errors import ApiError, Conflict, NotFound, ServiceUnavailable, TooManyRequests

__all__ = [
    "event_not_found",
    "order_cancelled",
    "order_not_found",
    "order_paid",
    "order_queued",
    "reservation_error",
    "sold_out",
]


def event_not_found(event_id: object) -> NotFound:
    return NotFound(f"there is no sale event {event_id}", code="event_not_found")


def order_not_found() -> NotFound:
    return NotFound("there is no such order of yours", code="order_not_found")


def order_cancelled() -> Conflict:
    return Conflict("this order was cancelled and can no longer be paid", code="order_cancelled")


def order_paid() -> Conflict:
    return Conflict("this order is paid and can no longer be cancelled", code="order_paid")


def order_queued() -> Conflict:
    return Conflict("this order is still being recorded; try again in a moment", code="order_queued")


def sold_out() -> Conflict:
    return Conflict("this sale event is sold out", code="sold_out")


_MESSAGES = {
    "limit_reached": "you already hold as many orders of this sale event as one shopper may",
    "not_started": "this sale event has not started yet",
    "ended": "this sale event has ended",
}


def reservation_error(code: str, value: object, event_id: int) -> ApiError:
    """The exception for a non-success reply of ``lua/seckill_reserve.lua`` or ``lua/seckill_take.lua``."""
    if code == "void":
        # The hold sweeper resolved this purchase while it was still being taken (a stalled process).
        return ServiceUnavailable("the sale is briefly unavailable; try again")
    if code == "sold_out":
        return sold_out()
    if code == "not_found":
        return event_not_found(event_id)
    if code == "rate_limited":
        wait_ms = int(str(value))
        return TooManyRequests("too many order attempts; slow down", retry_after_s=-(-wait_ms // 1000))
    if code in _MESSAGES:
        return Conflict(_MESSAGES[code], code=code)
    raise RuntimeError(f"seckill_reserve answered an unknown code {code!r}")
