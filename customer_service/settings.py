"""The settings of customer_service (``PEAK_CS_*``): ``ctx.settings.of(CustomerServiceSettings)``."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import setting

__all__ = ["CustomerServiceSettings"]


@dataclass(frozen=True, slots=True)
class CustomerServiceSettings:
    claim_idle_ms: int = setting(
        "PEAK_CS_CLAIM_IDLE_MS",
        30000,
        "queued support message pending this long is taken over",
        low=100,
        high=3600000,
    )
    inbox_max: int = setting(
        "PEAK_CS_INBOX_MAX",
        100000,
        "support messages the shed-time inbox holds; beyond, 503 `inbox_full` (Redis memory stays bounded)",
        low=1,
        high=100000000,
    )
    dead_letters_max: int = setting(
        "PEAK_CS_DEAD_LETTERS_MAX",
        10000,
        "inbox entries PostgreSQL refused kept for ops (`peak cs dead-letters`); the oldest are trimmed",
        low=1,
        high=10000000,
    )
    user_messages: int = setting(
        "PEAK_CS_USER_MESSAGES",
        30,
        "support messages one shopper may send per PEAK_CS_USER_WINDOW_S; beyond, 429 `rate_limited`",
        low=1,
        high=1000000,
    )
    user_window_s: int = setting(
        "PEAK_CS_USER_WINDOW_S", 60, "window of PEAK_CS_USER_MESSAGES", low=1, high=86400
    )
    page_size: int = setting(
        "PEAK_CS_PAGE_SIZE", 100, "messages per page of a conversation (newest page first)", low=1, high=1000
    )
