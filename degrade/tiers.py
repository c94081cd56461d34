"""Criticality tiers (the SRE book's names) and switch modes."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CORE_TIERS",
    "MODES",
    "PERCENT_MAX",
    "PERCENT_MIN",
    "TIERS",
    "Mode",
    "is_core",
    "mode_value",
    "parse_mode",
    "rank",
    "shed_share",
]

# Lowest first: the controller sheds from the start of this tuple and restores from its end.
TIERS = ("sheddable", "sheddable_plus", "critical", "critical_plus")
CORE_TIERS = frozenset({"critical", "critical_plus"})

# ``partial`` sheds ``percent`` % of a subsystem's requests, sticky per user (degrade/sticky.py); it is stored as
# one value, ``partial:30``, so that one field of the switch hash (and one audit entry) holds both.
Mode = Literal["open", "shed", "auto", "partial"]
MODES: tuple[Mode, ...] = ("open", "shed", "auto", "partial")
PERCENT_MIN, PERCENT_MAX = 1, 99
_PARTIAL = "partial:"


def rank(tier: str) -> int:
    return TIERS.index(tier)


def is_core(tier: str) -> bool:
    return tier in CORE_TIERS


def mode_value(mode: str, percent: int | None) -> str:
    """The stored value of a mode: ``partial:30`` for partial, else the mode itself."""
    return f"{_PARTIAL}{percent}" if mode == "partial" else mode


def parse_mode(value: str) -> tuple[str, int | None]:
    """(mode, percent) of a stored value; percent is None but for partial."""
    if value.startswith(_PARTIAL):
        digits = value[len(_PARTIAL) :]
        if digits.isascii() and digits.isdigit() and PERCENT_MIN <= int(digits) <= PERCENT_MAX:
            return "partial", int(digits)
    return value, None


def shed_share(value: str) -> int:
    """The percentage of requests a stored effective value sheds: 0 (open), 1-99 (partial) or 100 (shed)."""
    if value == "shed":
        return 100
    mode, percent = parse_mode(value)
    return percent if mode == "partial" and percent is not None else 0
