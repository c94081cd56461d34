"""What other subsystems may ask seckill (reviews asks whether a user bought a product)."""

from __future__ import annotations

from kit.context import Context

__all__ = ["has_paid_order"]


async def has_paid_order(ctx: Context, user_id: str, sku: str) -> bool:
    found = await ctx.db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM seckill_orders WHERE user_id = $1 AND sku = $2 AND status = 'paid')",
        user_id,
        sku,
    )
    return bool(found)
