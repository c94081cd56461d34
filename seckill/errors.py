"""Seckill's answers that are errors, and the one place where the scripts' refusal codes become them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from kit.errors import ApiError, Conflict, Forbidden, NotFound, ServiceUnavailable, TooManyRequests

__all__ = [
    "REFUND_REASONS",
    "REFUSALS",
    "AmountMismatch",
    "ChangePending",
    "Ended",
    "EventNotFound",
    "IdempotencyKeyReused",
    "LimitReached",
    "NotAdmitted",
    "NotReplicated",
    "NotStarted",
    "OrderCancelled",
    "OrderIdTaken",
    "OrderNotFound",
    "OrderPaid",
    "OrderQueued",
    "PaidByProvider",
    "PaymentConflict",
    "PaymentsNotConfigured",
    "RateLimited",
    "Refusal",
    "Repairing",
    "SaleUnavailable",
    "SignatureInvalid",
    "SignatureStale",
    "SoldOut",
    "TicketInvalid",
    "TicketNotRequired",
    "TicketRequired",
    "Voided",
]


class Refusal(Exception):
    """A purchase that a reservation script (``reserve.lua``, ``take.lua``) refused, mixed into the kit's error
    class that answers it; ``from_reply`` makes one from the script's reply."""

    @classmethod
    def from_reply(cls, event_id: int, reply: Sequence[Any]) -> Self:
        return cls()


class SoldOut(Refusal, Conflict):
    code = "sold_out"

    def __init__(self, message: str = "this sale event is sold out") -> None:
        super().__init__(message)


class LimitReached(Refusal, Conflict):
    code = "limit_reached"

    def __init__(
        self, message: str = "you already hold as many orders of this sale event as one shopper may"
    ) -> None:
        super().__init__(message)


class NotStarted(Refusal, Conflict):
    code = "not_started"

    def __init__(self, message: str = "this sale event has not started yet") -> None:
        super().__init__(message)


class Ended(Refusal, Conflict):
    code = "ended"

    def __init__(self, message: str = "this sale event has ended") -> None:
        super().__init__(message)


class TicketRequired(Forbidden):
    code = "ticket_required"

    def __init__(
        self,
        message: str = "this sale event needs a purchase ticket: GET /seckill/events/{id}/ticket once the sale"
        " has started, then send it as X-Purchase-Ticket",
    ) -> None:
        super().__init__(message)


class TicketInvalid(Forbidden):
    """Malformed, forged, another user's or event's, or expired: one code, so a prober learns nothing."""

    code = "ticket_invalid"

    def __init__(
        self, message: str = "this purchase ticket is not valid for you and this sale event"
    ) -> None:
        super().__init__(message)


class TicketNotRequired(Conflict):
    """An event warmed before tickets existed has no secret: it sells without tickets."""

    code = "ticket_not_required"

    def __init__(self, message: str = "this sale event sells without purchase tickets") -> None:
        super().__init__(message)


class NotAdmitted(Conflict):
    """The ticket's admission time (the sale's start plus this shopper's share of the spread) is still ahead."""

    code = "not_admitted"

    def __init__(self, admit_at: str, wait_ms: int) -> None:
        super().__init__(
            f"your turn in this sale starts at {admit_at}; come back then",
            headers={"Retry-After": str(max(1, -(-wait_ms // 1000)))},
        )


class EventNotFound(Refusal, NotFound):
    code = "event_not_found"

    def __init__(self, event_id: object) -> None:
        super().__init__(f"there is no sale event {event_id}")

    @classmethod
    def from_reply(cls, event_id: int, reply: Sequence[Any]) -> Self:
        return cls(event_id)


class RateLimited(Refusal, TooManyRequests):
    code = "rate_limited"

    def __init__(self, wait_ms: int) -> None:
        super().__init__("too many order attempts; slow down", retry_after_s=-(-wait_ms // 1000))

    @classmethod
    def from_reply(cls, event_id: int, reply: Sequence[Any]) -> Self:
        return cls(int(reply[1]))


class SaleUnavailable(ServiceUnavailable):
    """A purchase whose outcome this process could not learn (its script call failed): nothing is promised."""

    code = "unavailable"

    def __init__(self, message: str = "the sale is briefly unavailable; try again") -> None:
        super().__init__(message)


class ChangePending(ServiceUnavailable):
    """An admin change committed to PostgreSQL that Redis did not take yet (unreachable): the workers' outbox
    applies it once Redis answers (seckill/outbox.py). Sending it again would make a second change."""

    code = "unavailable"

    def __init__(self, event_id: int, what: str) -> None:
        super().__init__(
            f"{what} of event {event_id} is recorded, but Redis could not be reached to apply it; the workers apply"
            f" it within seconds of Redis answering again (send it again only with the same Idempotency-Key:"
            f" without one it is a second change; GET /seckill/events/{event_id} shows it once applied)",
            retry_after_s=5,
        )


class IdempotencyKeyReused(Conflict):
    """An admin's Idempotency-Key that names another change: a new change needs a new key."""

    code = "idempotency_key_reused"

    def __init__(self, event_id: int) -> None:
        super().__init__(
            f"this Idempotency-Key names another change (of event {event_id}): use a new key for a new change"
        )


class Voided(Refusal, SaleUnavailable):
    """The hold sweeper resolved this purchase while it was still being taken (a stalled process)."""


class Repairing(Refusal, SaleUnavailable):
    """The Redis node serving this event is not the one that acknowledged its last writes (a failover or a restart
    that may have lost some): its stock and counts are being re-derived from PostgreSQL (``seckill/rederive.py``)."""

    def __init__(
        self, message: str = "this sale is being checked after a Redis failover; try again in a moment"
    ) -> None:
        super().__init__(message)


class NotReplicated(SaleUnavailable):
    """The reservation ran but no replica confirmed it in time (PEAK_SECKILL_DURABILITY=replica): not promised.
    The same Idempotency-Key again gets the same order once it is durable."""

    def __init__(
        self,
        message: str = "the order could not be made durable in time; retry with the same Idempotency-Key",
    ) -> None:
        super().__init__(message)


class OrderIdTaken(Refusal, SaleUnavailable):
    """``reserve.lua`` found the new order id already queued (a collision of 36 random bits, ``seckill/ids.py``):
    nothing was reserved; the purchase is retried once with a new id, and answered 503 only if that collides too."""


class OrderNotFound(NotFound):
    code = "order_not_found"

    def __init__(self, message: str = "there is no such order of yours") -> None:
        super().__init__(message)


class OrderCancelled(Conflict):
    code = "order_cancelled"

    def __init__(self, message: str = "this order was cancelled and can no longer be paid") -> None:
        super().__init__(message)


class OrderPaid(Conflict):
    code = "order_paid"

    def __init__(self, message: str = "this order is paid and can no longer be cancelled") -> None:
        super().__init__(message)


class OrderQueued(Conflict):
    code = "order_queued"

    def __init__(self, message: str = "this order is still being recorded; try again in a moment") -> None:
        super().__init__(message)


class PaidByProvider(Forbidden):
    """The shopper's own call never marks an order paid: only the payment provider's signed callback does."""

    def __init__(
        self,
        message: str = "an order is paid when the payment provider confirms it (POST /seckill/payments/callback);"
        " this call cannot mark it paid",
    ) -> None:
        super().__init__(message)


class SignatureInvalid(ApiError):
    status_code = 401
    code = "invalid_signature"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Signature realm="peak-payments"'})


class SignatureStale(SignatureInvalid):
    code = "stale_signature"


class PaymentsNotConfigured(ServiceUnavailable):
    code = "payments_not_configured"

    def __init__(
        self,
        message: str = "payment callbacks are not configured: ops must set PEAK_PAYMENT_SECRET to the secret "
        "shared with the payment provider",
    ) -> None:
        super().__init__(message, retry_after_s=60)


class AmountMismatch(Conflict):
    code = "amount_mismatch"

    def __init__(self, message: str = "the amount paid is not the order's price") -> None:
        super().__init__(message)


class PaymentConflict(Conflict):
    code = "payment_conflict"

    def __init__(self, message: str = "this payment id was recorded for another order or amount") -> None:
        super().__init__(message)


# Why a payment was recorded as refund_due (seckill_payments.reason), and the answer it gets, every time.
REFUND_REASONS: dict[str, type[OrderCancelled | OrderPaid | AmountMismatch]] = {
    "order_cancelled": OrderCancelled,
    "order_paid": OrderPaid,
    "amount_mismatch": AmountMismatch,
}


# Every refusal code of reserve.lua and take.lua (their "Returns" contracts).
REFUSALS: dict[str, type[Refusal]] = {
    "sold_out": SoldOut,
    "limit_reached": LimitReached,
    "not_started": NotStarted,
    "ended": Ended,
    "not_found": EventNotFound,
    "rate_limited": RateLimited,
    "void": Voided,
    "duplicate": OrderIdTaken,
    "repairing": Repairing,
}
