"""This process's view of every switch: what the middleware reads on each request, without I/O.

It is filled from Redis at start, by pub/sub messages and by the periodic resync; when Redis is unreachable it
keeps the last modes it knew and says so. ``version`` goes up whenever it adopts a change (a switch, a plan's
switches at once, news of a plan edited), so a reader in this process (the console) can wake at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from degrade.tiers import TIERS, is_core, parse_mode, rank, shed_share
from kit.component import Component

__all__ = ["Board", "Subsystem", "iso_ms"]

_FIELDS = ("mode", "auto", "tier", "since", "reason", "by", "source")
_DEFAULTS = {"mode": "auto", "auto": "open", "since": "0", "reason": "", "by": "", "source": ""}


@dataclass(frozen=True)
class Subsystem:
    name: str
    default_tier: str
    routes: Sequence[BaseRoute]


class Board:
    def __init__(self, subsystems: Iterable[Subsystem]) -> None:
        self.subsystems = {s.name: s for s in subsystems}
        for s in self.subsystems.values():
            if s.default_tier not in TIERS:
                raise ValueError(
                    f"component {s.name} has tier {s.default_tier!r}; use one of {', '.join(TIERS)}"
                )
        # Read on every request: first path segment -> subsystem, and subsystem -> shed now.
        self.prefixes: dict[str, str] = {}
        for s in self.subsystems.values():
            for r in s.routes:
                segment = getattr(r, "path", "").lstrip("/").split("/", 1)[0]
                if segment and "{" not in segment:
                    self.prefixes.setdefault(segment, s.name)
        # The share of its requests each subsystem sheds now: 0 (open), 1-99 (partial) or 100 (shed).
        self.shed: dict[str, int] = {name: 0 for name in self.subsystems}
        # Shed answers (whole and partial) per subsystem since the process started: counted by the middleware on
        # its shed path only.
        self.shed_answers: dict[str, int] = {name: 0 for name in self.subsystems}
        self.version = 0
        self.applied_ms: dict[str, int] = {}
        self.core: frozenset[str] = frozenset()
        self._values: dict[str, dict[str, str]] = {name: {} for name in self.subsystems}
        self.redis_ok = False
        self.redis_error = "not synchronised yet"
        self.synced_at = 0.0
        self._refresh()

    @classmethod
    def from_components(cls, components: Iterable[Component], *, exclude: str | None = None) -> Board:
        # Ops tooling (tier None: degrade's own admin routes, the console) is never switched off: ops would lock
        # themselves out. ``exclude`` is the older spelling of the same thing for one name.
        return cls(
            Subsystem(c.name, c.tier, tuple(c.routes))
            for c in components
            if c.tier is not None and c.name != exclude
        )

    def get(self, name: str, field: str) -> str:
        value = self._values[name].get(field)
        return self.default(name, field) if value is None else value

    def default(self, name: str, field: str) -> str:
        """A field's value while it was never set."""
        return self.subsystems[name].default_tier if field == "tier" else _DEFAULTS[field]

    def effective(self, name: str) -> str:
        """``open``, ``shed`` or ``partial``."""
        return parse_mode(self._effective_value(name))[0]

    def _effective_value(self, name: str) -> str:
        mode = self.get(name, "mode")
        if mode == "auto":
            # Core tiers are never shed automatically, even if a tier change left an old automatic decision.
            return "open" if is_core(self.get(name, "tier")) else self.get(name, "auto")
        return mode

    def replace(self, stored: Mapping[str, str]) -> None:
        """Adopt the whole stored hash (start, resync)."""
        values: dict[str, dict[str, str]] = {name: {} for name in self.subsystems}
        for key, value in stored.items():
            field, _, name = key.partition(":")
            if field in _FIELDS and name in values:
                values[name][field] = value
        if values != self._values:
            self.version += 1
        self._values = values
        self.mark_synced()

    def apply(self, change: Mapping[str, Any]) -> None:
        """Adopt one published message: a switch's change, a plan's changes all at once (``changes``), or news
        that plans were edited (``plans_changed``)."""
        if change.get("plans_changed"):
            self.version += 1
            return
        if "changes" in change:
            # A plan: every switch at once; an empty list comes out of Lua's cjson as an empty object.
            items = change["changes"] or []
            for item in items:
                self._adopt(item, change)
            self.version += 1
            self._refresh()
            return
        if self._adopt(change, change):
            self.version += 1
            self._refresh()

    def _adopt(self, item: Mapping[str, Any], change: Mapping[str, Any]) -> bool:
        name = str(item.get("name", ""))
        if name not in self._values:
            return False
        entry = self._values[name]
        entry[str(item["field"])] = str(item["new"])
        entry.update(
            since=str(change["at"]),
            reason=str(change["reason"]),
            by=str(change["by"]),
            source=str(change["source"]),
        )
        return True

    def mark_synced(self) -> None:
        self.redis_ok = True
        self.redis_error = ""
        self.synced_at = time.time()
        self._refresh()

    def mark_unreachable(self, error: BaseException) -> None:
        self.redis_ok = False
        self.redis_error = f"{type(error).__name__}: {error}".strip(": ")

    def _refresh(self) -> None:
        shed = {name: shed_share(self._effective_value(name)) for name in self.subsystems}
        now_ms = int(time.time() * 1000)
        for name, value in shed.items():
            if value != self.shed.get(name, 0):
                # When this process started obeying, to compare with the change's time in the audit log.
                self.applied_ms[name] = now_ms
        self.shed = shed
        self.core = frozenset(name for name in self.subsystems if is_core(self.get(name, "tier")))

    def route_for(self, name: str, scope: Scope) -> BaseRoute | None:
        for r in self.subsystems[name].routes:
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return r
        return None

    def by_tier(self, names: Iterable[str], *, highest_first: bool) -> list[list[str]]:
        """Names grouped by tier, lowest tier first (or highest first)."""
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(self.get(name, "tier"), []).append(name)
        order = sorted(groups, key=rank, reverse=highest_first)
        return [sorted(groups[tier]) for tier in order]

    def describe(self, name: str) -> dict[str, Any]:
        since_ms = int(self.get(name, "since") or 0)
        mode, percent = parse_mode(self.get(name, "mode"))
        return {
            "name": name,
            "tier": self.get(name, "tier"),
            "default_tier": self.subsystems[name].default_tier,
            "mode": mode,
            "percent": percent,
            "effective": self.effective(name),
            "controller_state": self.get(name, "auto"),
            "since": iso_ms(since_ms) if since_ms else None,
            "reason": self.get(name, "reason"),
            "changed_by": self.get(name, "by"),
            "source": self.get(name, "source") or None,
        }

    def status(self) -> dict[str, Any]:
        return {
            "redis": "ok" if self.redis_ok else "unreachable",
            "redis_error": self.redis_error or None,
            "synced_at": iso_ms(int(self.synced_at * 1000)) if self.synced_at else None,
            "modes": {name: self.effective(name) for name in sorted(self.subsystems)},
            "applied_at_ms": dict(sorted(self.applied_ms.items())),
        }


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
