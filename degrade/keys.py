"""Every Redis key and channel of the degradation controller; one hash tag so each script runs on a cluster."""

from __future__ import annotations

__all__ = [
    "AUDIT",
    "CHANNEL",
    "HEARTBEAT_TTL_FACTOR",
    "PLANS",
    "PRESSURE",
    "PROCESSES",
    "SCHEDULE",
    "SERIES",
    "SWITCHES",
    "heartbeat",
]

_TAG = "{degrade}"

# Hash: ``mode:<name>``, ``auto:<name>``, ``tier:<name>``, ``since:<name>``, ``reason:<name>``, ``by:<name>``,
# ``source:<name>`` and ``auto_last_ms`` (the last automatic change, fleet-wide).
SWITCHES = f"{_TAG}:switches"
# Stream of every change: who, when, old, new, reason, source.
AUDIT = f"{_TAG}:audit"
# Sorted set: process id -> last time (ms) it saw a signal above its high mark.
PRESSURE = f"{_TAG}:pressure"
# Sorted set: process id -> expiry (ms) of its heartbeat record.
PROCESSES = f"{_TAG}:processes"
# Stream of every API process's signals and per-subsystem counts, one entry per PEAK_DEGRADE_SERIES_S,
# trimmed by time (degrade/series.py).
SERIES = f"{_TAG}:series"
# Hash: plan name -> its record as JSON (degrade/plans.py; written only by the plan scripts).
PLANS = f"{_TAG}:plans"
# Sorted set: plan name -> the time (ms, Redis clock) it is to be applied.
SCHEDULE = f"{_TAG}:schedule"
# Pub/sub channel carrying each change as JSON; channels are cluster-wide, so it needs no tag.
CHANNEL = "degrade:switches"

# A heartbeat record lives this many heartbeat intervals.
HEARTBEAT_TTL_FACTOR = 3


def heartbeat(process_id: str) -> str:
    return f"{_TAG}:process:{process_id}"
