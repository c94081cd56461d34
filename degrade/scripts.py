"""degrade's Lua script (``degrade/lua/set.lua``), bound once: the KEYS it takes and what its reply means.

Keys come from ``degrade/keys.py``; the reply becomes a ``Change`` here, and a refusal meant for ops a
``SwitchRefused`` here and nowhere else (the controller reads the status itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from degrade import keys
from degrade.errors import SwitchRefused
from kit.lua import Script
from kit.redis import RedisClient

__all__ = ["ALL", "SET", "Change", "SetRequest", "SetStatus", "raise_unless_set", "set_field"]

SET = Script.of("degrade", "set")

# What the component hands the kit to load at start.
ALL = (SET,)

_SET_KEYS = (keys.SWITCHES, keys.AUDIT, keys.PRESSURE)


class SetStatus(StrEnum):
    CHANGED = "changed"  # set, audited and published
    UNCHANGED = "unchanged"  # the field already held the value
    CONFLICT = "conflict"  # the compare-and-set found another value than expected
    TOO_SOON = "too_soon"  # the step since the last automatic change, or the dwell, is not over
    PRESSURE = "pressure"  # a process reported pressure within the quiet time


@dataclass(frozen=True)
class Change:
    status: SetStatus
    old: str
    new: str
    since_ms: int


@dataclass(frozen=True)
class SetRequest:
    """One field of a subsystem's switch to set: by ops (any value) or by the controller (a compare-and-set
    from ``expected``, at least ``step_s`` after the last automatic change, and a restore only after
    ``dwell_s`` shed and ``quiet_s`` without pressure anywhere)."""

    name: str
    field: str
    value: str
    reason: str
    who: str
    source: str
    expected: str = ""
    step_s: float = 0
    dwell_s: float = 0
    quiet_s: float = 0


async def set_field(redis: RedisClient, request: SetRequest, *, default: str, audit_max: int) -> Change:
    """Set the field (or say why not), audit and publish the change, in one step; ``default`` is the field's
    value while unset."""
    r = request
    status, old, new, since = await SET(
        redis,
        _SET_KEYS,
        [r.name, r.field, r.value, r.reason, r.who, r.source, r.expected, int(r.step_s * 1000),
         int(r.dwell_s * 1000), int(r.quiet_s * 1000), audit_max, keys.CHANNEL, default],
    )  # fmt: skip
    return Change(SetStatus(str(status)), str(old), str(new), int(since))


def raise_unless_set(change: Change, name: str) -> None:
    """For ops: SwitchRefused unless the switch now holds the value asked for."""
    if change.status not in (SetStatus.CHANGED, SetStatus.UNCHANGED):
        raise SwitchRefused(name, change.status.value)
