"""Criticality tiers (the SRE book's names) and switch modes."""

from __future__ import annotations

from typing import Literal

__all__ = ["CORE_TIERS", "MODES", "TIERS", "Mode", "is_core", "rank"]

# Lowest first: the controller sheds from the start of this tuple and restores from its end.
TIERS = ("sheddable", "sheddable_plus", "critical", "critical_plus")
CORE_TIERS = frozenset({"critical", "critical_plus"})

Mode = Literal["open", "shed", "auto"]
MODES: tuple[Mode, ...] = ("open", "shed", "auto")


def rank(tier: str) -> int:
    return TIERS.index(tier)


def is_core(tier: str) -> bool:
    return tier in CORE_TIERS
