"""Customer service's answers that are errors, and the one place the post script's reply codes become them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kit.errors import NotFound, ServiceUnavailable, TooManyRequests

__all__ = ["InboxFull", "MessageNotFound", "MessageRateLimited", "refusal"]


class MessageNotFound(NotFound):
    code = "message_not_found"


class MessageRateLimited(TooManyRequests):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "you sent support many messages in a short time; an agent reads them all, try again later",
            retry_after_s=retry_after_s,
        )


class InboxFull(ServiceUnavailable):
    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"support is switched off for now and its inbox is full ({capacity} messages); try again later",
            retry_after_s=30,
            code="inbox_full",
        )


def refusal(reply: Sequence[Any]) -> Exception | None:
    """The error of a refusing ``post.lua`` reply, None when it admitted the message."""
    status = str(reply[0])
    if status == "ok":
        return None
    value = int(reply[1])
    if status == "rate_limited":
        return MessageRateLimited(retry_after_s=max(1, -(-value // 1000)))
    if status == "full":
        return InboxFull(value)
    raise ValueError(f"unknown reply of customer_service_post: {status!r}")
