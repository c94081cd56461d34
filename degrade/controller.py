"""The automatic controller: sheds `auto` non-core tiers under overload and restores them after it.

Design choice: each process samples its own signals, but acts on the SHARED switch state through the same Lua
script as ops, so that the whole fleet sheds or restores together (a shed subsystem in one process only moves
its load to the others, and the shared database feels it anyway). Processes must not flap against each other,
so the script enforces it fleet-wide: an automatic change is a compare-and-set; two automatic changes are at
least PEAK_DEGRADE_STEP_S apart (one overloaded process escalates one tier at a time, and N processes seeing
the same overload do not shed N tiers at once); a restore needs the tier shed for PEAK_DEGRADE_DWELL_S and no
process reporting pressure in the last PEAK_DEGRADE_QUIET_S (each overloaded process notes its pressure in
Redis every sample), so a calm process cannot restore what a busy one still needs shed.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

from degrade import store
from degrade.board import Board
from degrade.scripts import SetRequest, SetStatus
from degrade.settings import DegradeSettings
from degrade.signals import Sample
from degrade.tiers import is_core
from kit.context import Context

__all__ = ["Controller", "Marks"]

log = logging.getLogger("peak.degrade")

_SIGNALS = ("inflight", "p99_ms", "lag_ms", "cpu", "error_ratio")


@dataclass(frozen=True)
class Marks:
    high: dict[str, float]
    low: dict[str, float]

    @classmethod
    def from_settings(cls, s: DegradeSettings) -> Marks:
        """The marks of checked settings (``DegradeSettings.check``: no low mark above its high mark)."""
        high = {
            "inflight": float(s.inflight_high),
            "p99_ms": s.p99_high_ms,
            "lag_ms": s.lag_high_ms,
            "cpu": s.cpu_high,
            "error_ratio": s.error_high,
        }
        low = {
            "inflight": float(s.inflight_low),
            "p99_ms": s.p99_low_ms,
            "lag_ms": s.lag_low_ms,
            "cpu": s.cpu_low,
            "error_ratio": s.error_low,
        }
        return cls(high, low)

    def above(self, sample: Sample) -> list[str]:
        return [
            f"{n} {getattr(sample, n):g} > {self.high[n]:g}"
            for n in _SIGNALS
            if getattr(sample, n) > self.high[n]
        ]

    def all_below(self, sample: Sample) -> bool:
        return all(getattr(sample, n) <= self.low[n] for n in _SIGNALS)


class Controller:
    def __init__(self, ctx: Context, board: Board, process_id: str) -> None:
        self.ctx = ctx
        self.board = board
        self.process_id = process_id
        self.settings = ctx.settings.of(DegradeSettings)
        self.marks = Marks.from_settings(self.settings)
        self.high_count = 0
        self.low_count = 0
        self.decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)

    async def observe(self, sample: Sample) -> None:
        s = self.settings
        above = self.marks.above(sample)
        if above:
            self.high_count += 1
            self.low_count = 0
            await store.note_pressure(self.ctx.redis, self.process_id)
            if self.high_count >= s.high_samples and await self._shed(", ".join(above)):
                self.high_count = 0
        elif self.marks.all_below(sample):
            self.low_count += 1
            self.high_count = 0
            if self.low_count >= s.low_samples and await self._restore():
                self.low_count = 0
        else:
            # Between the marks: neither overloaded nor calm enough to restore (hysteresis).
            self.high_count = 0
            self.low_count = 0

    def _auto(self, state: str) -> list[str]:
        b = self.board
        return [
            n
            for n in b.subsystems
            if b.get(n, "mode") == "auto" and not is_core(b.get(n, "tier")) and b.get(n, "auto") == state
        ]

    async def _shed(self, why: str) -> bool:
        groups = self.board.by_tier(self._auto("open"), highest_first=False)
        if not groups:
            return False
        reason = f"overload: {why} for {self.settings.high_samples} samples"
        return await self._switch(groups[0], "shed", expected="open", reason=reason)

    async def _restore(self) -> bool:
        groups = self.board.by_tier(self._auto("shed"), highest_first=True)
        if not groups:
            return False
        reason = f"load is back under every low mark for {self.settings.low_samples} samples"
        return await self._switch(groups[0], "open", expected="shed", reason=reason)

    async def _switch(self, names: list[str], value: str, *, expected: str, reason: str) -> bool:
        s = self.settings
        changed = False
        for name in names:
            request = SetRequest(
                name, "auto", value, reason=reason, who=self.process_id, source="controller", expected=expected,
                # The rest of a tier goes with its first member.
                step_s=0 if changed else s.step_s,
                dwell_s=s.dwell_s if value == "open" else 0,
                quiet_s=s.quiet_s if value == "open" else 0,
            )  # fmt: skip
            result = await store.change(self.ctx, self.board, request)
            self.decisions.append(
                {
                    "at": time.time(),
                    "name": name,
                    "to": value,
                    "status": result.status.value,
                    "reason": reason,
                }
            )
            if result.status is SetStatus.CHANGED:
                changed = True
                log.warning("controller set %s to %s: %s", name, value, reason)
        return changed

    def status(self) -> dict[str, Any]:
        return {
            "high_samples": self.high_count,
            "low_samples": self.low_count,
            "marks": {"high": self.marks.high, "low": self.marks.low},
            "decisions": list(self.decisions),
        }
