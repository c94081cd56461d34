"""What ops can do to a switch, shared by the admin API and the CLI."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from degrade import store
from degrade.board import Board
from degrade.errors import ForceRequired, UnknownSubsystem
from degrade.scripts import SetRequest, SetStatus, raise_unless_set
from degrade.tiers import is_core
from kit.context import Context
from kit.errors import InvalidRequest, ServiceUnavailable

__all__ = ["set_switch", "unreachable"]


def unreachable(exc: RedisError) -> ServiceUnavailable:
    return ServiceUnavailable(f"the switch store (Redis) cannot be reached: {exc}", code="store_unreachable")


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
        raise InvalidRequest("give a mode (open, shed or auto), a tier, or both")
    if not reason.strip():
        raise InvalidRequest("field 'reason' must say why (it goes to the audit log)")
    target_tier = tier or board.get(name, "tier")
    if mode == "shed" and is_core(target_tier) and not force:
        raise ForceRequired(
            f"{name} is {target_tier}: shedding it by hand takes the core of the site down; "
            "repeat with force to do it anyway"
        )
    changed = False
    try:
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
