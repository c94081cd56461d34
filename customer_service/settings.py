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
