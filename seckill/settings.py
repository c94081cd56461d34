"""The flash sale's settings (``PEAK_SECKILL_*``), read by the kit's machinery: ``ctx.settings.of(SeckillSettings)``."""

from __future__ import annotations

from dataclasses import dataclass

from kit.settings import setting

__all__ = ["SeckillSettings"]


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
    coalesce_max: int = setting(
        "PEAK_SECKILL_COALESCE_MAX",
        128,
        "purchases of one event sent in one script call (1 turns coalescing off)",
        low=1,
        high=1000,
    )
