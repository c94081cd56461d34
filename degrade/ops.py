"""What ops can do to a switch, shared by the admin API and the CLI."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from degrade import store
from degrade.board import Board
from degrade.errors import ForceRequired, UnknownSubsystem
from degrade.scripts import SetRequest, SetStatus, raise_unless_set
from degrade.tiers import is_core, shed_share
from kit.context import Context
from kit.errors import InvalidRequest, ServiceUnavailable

__all__ = ["set_switch", "unreachable"]


def unreachable(exc: RedisError) -> ServiceUnavailable:
    return ServiceUnavailable(f"the switch store (Redis) cannot be reached: {exc}", code="store_unreachable")


def _refuse_without_force(board: Board, name: str, *, mode: str | None, tier: str | None) -> None:
    """ForceRequired for a change that can take a core subsystem down: a shed by hand of a subsystem that is
    core (now, after the change, or by default), a non-core tier for one that is core now or by default, and
    any change that leaves a default-core subsystem where the controller may shed it (auto, non-core tier)."""
    current, default = board.get(name, "tier"), board.subsystems[name].default_tier
    target_tier = tier or current
    target_mode = mode or board.get(name, "mode")
    core_by_default = is_core(default)
    why = ""
    if (
        mode is not None
        and shed_share(mode)
        and (is_core(current) or is_core(target_tier) or core_by_default)
    ):
        # Partly too: a partial shed takes the core down for some of its users.
        why = f"shedding {name} ({target_tier}, by default {default}) by hand takes the core of the site down"
    elif tier is not None and not is_core(tier) and (is_core(current) or core_by_default):
        why = (
            f"tier {tier} lets the controller shed {name}, a core subsystem ({current}, by default {default})"
        )
    elif core_by_default and not is_core(target_tier) and target_mode == "auto":
        why = f"mode auto with tier {target_tier} lets the controller shed {name} (by default {default})"
    if why:
        raise ForceRequired(f"{why}; repeat with force to do it anyway")


async def set_switch(
    ctx: Context,
    board: Board,
    name: str,
    *,
    mode: str | None,
    tier: str | None,
    reason: str,
    who: str,
    force: bool,
) -> dict[str, Any]:
    if name not in board.subsystems:
        raise UnknownSubsystem(f"no subsystem {name!r}; known: {', '.join(sorted(board.subsystems))}")
    if mode is None and tier is None:
        raise InvalidRequest("give a mode (open, shed, auto or partial), a tier, or both")
    if not reason.strip():
        raise InvalidRequest("field 'reason' must say why (it goes to the audit log)")
    changed = False
    try:
        # Judged on the stored switches, not on this process's copy of them (up to a resync old).
        board.replace(await store.load(ctx.redis))
        if not force:
            _refuse_without_force(board, name, mode=mode, tier=tier)
        # The tier first, so that a forced shed of a subsystem made core is judged on its new tier.
        for field, value in (("tier", tier), ("mode", mode)):
            if value is None:
                continue
            request = SetRequest(name, field, value, reason=reason, who=who, source="ops")
            result = await store.change(ctx, board, request)
            raise_unless_set(result, name)
            changed = changed or result.status is SetStatus.CHANGED
    except RedisError as exc:
        raise unreachable(exc) from None
    return {**board.describe(name), "changed": changed}
