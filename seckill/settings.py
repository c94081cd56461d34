"""The flash sale's settings (``PEAK_SECKILL_*``), read by the kit's machinery: ``ctx.settings.of(SeckillSettings)``."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import SettingsError, setting

__all__ = ["SeckillSettings"]

_MIN_SECRET_CHARS = 16


@dataclass(frozen=True, slots=True)
class SeckillSettings:
    user_rate_per_s: int = setting(
        "PEAK_SECKILL_USER_RATE_PER_S",
        10,
        "order attempts per user per second on one event",
        low=1,
        high=1000000,
    )
    ip_rate_per_s: int = setting(
        "PEAK_SECKILL_IP_RATE_PER_S",
        1000,
        "order attempts per client IP per second on one event",
        low=1,
        high=10000000,
    )
    max_deliveries: int = setting(
        "PEAK_SECKILL_MAX_DELIVERIES",
        5,
        "deliveries before an order message is dead-lettered",
        low=1,
        high=1000,
    )
    batch_size: int = setting(
        "PEAK_SECKILL_BATCH_SIZE", 200, "order messages written per PostgreSQL batch", low=1, high=10000
    )
    claim_idle_ms: int = setting(
        "PEAK_SECKILL_CLAIM_IDLE_MS",
        10000,
        "pending time before another worker reclaims",
        low=100,
        high=3600000,
    )
    sweep_interval_s: float = setting(
        "PEAK_SECKILL_SWEEP_INTERVAL_S",
        1.0,
        "how often a worker cancels unpaid orders past pay_by",
        low=0.05,
        high=3600,
    )
    soldout_recheck_s: float = setting(
        "PEAK_SECKILL_SOLDOUT_RECHECK_S",
        0.5,
        "how often each process rechecks the events it remembers as sold out",
        low=0.05,
        high=60,
    )
    view_recheck_s: float = setting(
        "PEAK_SECKILL_VIEW_RECHECK_S",
        0.5,
        "how often each API process rereads the stock and end of the cached events on sale or about to start "
        "(bounds the event view's staleness when a change message is lost)",
        low=0.05,
        high=60,
    )
    view_max_age_s: int = setting(
        "PEAK_SECKILL_VIEW_MAX_AGE_S",
        1,
        "Cache-Control max-age of the event view (GET /seckill/events/{id}) for browsers and CDNs",
        low=0,
        high=60,
    )
    ticket_ttl_s: int = setting(
        "PEAK_SECKILL_TICKET_TTL_S",
        30,
        "how long a purchase ticket stays valid after its admission time",
        low=1,
        high=3600,
    )
    order_queued_ttl_s: float = setting(
        "PEAK_SECKILL_ORDER_QUEUED_TTL_S",
        1.0,
        "how long an API process trusts a queued order (or an unknown one) in its memory without a confirmation "
        "by its recheck (the 'written' message ends it at once)",
        low=0.0,
        high=10,
    )
    order_pending_ttl_s: float = setting(
        "PEAK_SECKILL_ORDER_PENDING_TTL_S",
        2.0,
        "how long an API process trusts an unpaid order in its memory without a confirmation by its recheck "
        "(paid and cancelled orders stay cached)",
        low=0.0,
        high=60,
    )
    order_recheck_s: float = setting(
        "PEAK_SECKILL_ORDER_RECHECK_S",
        0.5,
        "how often each API process rechecks its cached queued and unpaid orders and those its long polls wait "
        "on (one Redis pipeline and one PostgreSQL query): the staleness bound when a change message is lost",
        low=0.05,
        high=60,
    )
    order_cache_size: int = setting(
        "PEAK_SECKILL_ORDER_CACHE_SIZE",
        100_000,
        "orders each API process keeps in memory (the oldest entry goes first)",
        low=1,
        high=10_000_000,
    )
    coalesce_max: int = setting(
        "PEAK_SECKILL_COALESCE_MAX",
        128,
        "purchases of one event sent in one script call (1 turns coalescing off)",
        low=1,
        high=1000,
    )
    outbox_age_s: float = setting(
        "PEAK_SECKILL_OUTBOX_AGE_S",
        5.0,
        "how old a recorded admin change (event created, stock added, end moved) not yet applied to Redis must be "
        "before the workers' outbox loop applies it (the API applies its own at once)",
        low=0.0,
        high=3600,
    )
    outbox_interval_s: float = setting(
        "PEAK_SECKILL_OUTBOX_INTERVAL_S",
        1.0,
        "how often a worker looks for admin changes left unapplied to Redis",
        low=0.05,
        high=3600,
    )
    durability: str = setting(
        "PEAK_SECKILL_DURABILITY",
        "auto",
        "when a purchase is answered 202: `replica` once its reservation reached a Redis replica (WAIT, one per "
        "script call), `local` once the primary has it; `auto` is `replica` when the Redis deployment has "
        "replicas at start, else `local`",
        choices=("auto", "replica", "local"),
    )
    durability_timeout_ms: int = setting(
        "PEAK_SECKILL_DURABILITY_TIMEOUT_MS",
        150,
        "with durability `replica`: how long a purchase waits for a replica to confirm its reservation before "
        "it is answered 503 `unavailable` (the same Idempotency-Key again gets the same order)",
        low=1,
        high=10000,
    )
    repair_interval_s: float = setting(
        "PEAK_SECKILL_REPAIR_INTERVAL_S",
        0.25,
        "while an event refuses purchases after a Redis failover or restart, how often a process that saw it "
        "tries to re-derive the event's Redis state from PostgreSQL",
        low=0.01,
        high=60,
    )
    payment_secret: str | None = setting(
        "PEAK_PAYMENT_SECRET",
        None,
        "comma-separated HMAC secrets shared with the payment provider: any one verifies a callback, the first "
        "signs `peak seckill pay` (several during a rotation; each at least 16 characters)",
        secret=True,
    )
    payment_tolerance_s: int = setting(
        "PEAK_PAYMENT_TOLERANCE_S",
        300,
        "how far a payment callback's signed timestamp may be from the server clock (replay window)",
        low=1,
        high=86400,
    )

    def payment_secrets(self) -> list[bytes]:
        """The payment secrets, the signing one first; empty when none is set."""
        return [s.strip().encode() for s in (self.payment_secret or "").split(",") if s.strip()]

    def check(self) -> None:
        # Never the value in the message: it is a secret.
        if any(len(s) < _MIN_SECRET_CHARS for s in self.payment_secrets()):
            raise SettingsError(
                f"PEAK_PAYMENT_SECRET: every comma-separated secret must be at least {_MIN_SECRET_CHARS} characters"
            )
