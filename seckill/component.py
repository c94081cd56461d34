"""The flash sale as the composition sees it: routes, migrations, the purchase service, the order writer,
payment-timeout and admin-change outbox loops, commands, settings and scripts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kit.component import Component, Role
from kit.context import Context
from kit.stopping import on_stop
from seckill import cli, gauges, outbox, routes, scripts, timeouts, worker
from seckill.console_feed import sale_feed
from seckill.eventcache import EventCache
from seckill.news import News
from seckill.orderwatch import OrderWatch
from seckill.payments import PaymentGate
from seckill.reservation import Reserver
from seckill.settings import SeckillSettings
from seckill.soldout import SoldOutMemory

__all__ = ["component"]


@contextlib.asynccontextmanager
async def _purchase_service(ctx: Context, role: Role) -> AsyncIterator[None]:
    news = News()
    sold_out = SoldOutMemory()
    sold_out.hear(news)
    reserver = Reserver(ctx, sold_out)
    events = EventCache(ctx, sold_out)
    events.hear(news)
    watch = OrderWatch(ctx)
    watch.hear(news)
    ctx.put(watch)
    ctx.put(news)
    ctx.put(sold_out)
    ctx.put(reserver)
    ctx.put(events)
    ctx.put(PaymentGate(ctx.settings.of(SeckillSettings)))
    tasks = []
    undo = on_stop(watch.stop_waiting) if role == "api" else None
    if role == "api":
        await reserver.start()
        await events.start()
        tasks = [asyncio.create_task(news.listen(ctx)), asyncio.create_task(sold_out.recheck(ctx))]
        tasks += [asyncio.create_task(events.run()), asyncio.create_task(events.clock.run(ctx.redis))]
        tasks.append(asyncio.create_task(watch.recheck()))
    try:
        yield
    finally:
        if undo is not None:
            undo()
        await reserver.drain()
        news.close()
        sold_out.close()
        events.close()
        watch.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)


def component() -> Component:
    return Component(
        name="seckill",
        routes=routes.routes(),
        migrations="seckill",
        services=[_purchase_service],
        loops=[worker.order_writer, timeouts.sweep_loop, outbox.outbox_loop],
        cli=cli.add_commands,
        tier="critical",
        settings=SeckillSettings,
        scripts=scripts.ALL,
        feeds={"sale": sale_feed},
        gauges=[gauges.refresh],
    )
