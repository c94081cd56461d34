"""Purchase tickets: proof that a shopper asked for one after the sale started, checked without Redis.

A ticket is ``<expires_ms>.<admit_ms>.<mac>``: ``mac`` is the base64url HMAC-SHA256, keyed with the event's
own secret, over the user id, the event id and both times, so a ticket names its user and event without
carrying them, and no field can be changed. Each event has its own random 32-byte secret (made when it is
warmed into Redis, never shown): a leaked secret opens one event only, and nobody knows it before the sale
starts, since Redis hands it to the API processes only once its clock reached the start (``view.lua``).

``admit_ms`` spreads the first arrivals: the start plus an HMAC of the user id modulo the event's
``admission_spread_ms``, the same for a user on every fetch and in every process, and unknowable before the
start. A purchase before it is told to come back at that time, so the stock does not go to the lowest latency.
"""

from __future__ import annotations

import base64
import hmac

from seckill.errors import TicketInvalid

__all__ = ["MAX_TICKET_CHARS", "admit_ms", "make", "verify"]

_MAC_CHARS = 43  # 32 bytes in unpadded base64url
_MAX_MS_DIGITS = 15
MAX_TICKET_CHARS = 2 * _MAX_MS_DIGITS + 2 + _MAC_CHARS


def admit_ms(secret: bytes, user_id: str, start_ms: int, spread_ms: int) -> int:
    if spread_ms <= 0:
        return start_ms
    digest = hmac.digest(secret, b"admit\n" + user_id.encode(), "sha256")
    return start_ms + int.from_bytes(digest[:8], "big") % spread_ms


def _mac(secret: bytes, user_id: str, event_id: int, expires_ms: int, admit: int) -> str:
    signed = b"%s\n%d\n%d\n%d" % (user_id.encode(), event_id, expires_ms, admit)
    # hmac.digest: one C call (hmac.new(...).digest() costs three times as much).
    return base64.urlsafe_b64encode(hmac.digest(secret, signed, "sha256")).rstrip(b"=").decode()


def make(secret: bytes, user_id: str, event_id: int, expires_ms: int, admit: int) -> str:
    return f"{expires_ms}.{admit}.{_mac(secret, user_id, event_id, expires_ms, admit)}"


def verify(secret: bytes, ticket: str, user_id: str, event_id: int, now_ms: int) -> int:
    """The ticket's admission time, or ``TicketInvalid`` (malformed, another user's or event's, forged,
    expired: one code for all)."""
    if len(ticket) > MAX_TICKET_CHARS:
        raise TicketInvalid()
    parts = ticket.split(".")
    if len(parts) != 3:
        raise TicketInvalid()
    expires, admit, mac = parts
    if not (
        0 < len(expires) <= _MAX_MS_DIGITS
        and 0 < len(admit) <= _MAX_MS_DIGITS
        and expires.isascii()
        and expires.isdigit()
        and admit.isascii()
        and admit.isdigit()
        and len(mac) == _MAC_CHARS
        and mac.isascii()
    ):
        raise TicketInvalid()
    expires_ms, admit_at = int(expires), int(admit)
    if not hmac.compare_digest(_mac(secret, user_id, event_id, expires_ms, admit_at), mac):
        raise TicketInvalid()
    if now_ms >= expires_ms:
        raise TicketInvalid("your purchase ticket has expired; fetch a new one")
    return admit_at
