"""`peak sso backchannel [--retry ID ... | --retry-all]`: the back-channel logouts waiting and the dead letters.

Lists how many deliveries wait (and how many are under way or between attempts) and the dead letters newest
first: client, session, attempts, the last failure. ``--retry`` puts dead letters back on the delivery stream
(with a fresh count of attempts). Retry: safe; a second run re-queues what the first did not reach, and a run
killed between re-queueing an entry and deleting its dead letter sends that logout twice (at least once).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from kit.commands import CommandError, say
from kit.context import Context
from sso import keys

__all__ = ["add_arguments", "backchannel_command"]

_LISTED = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retry", action="append", default=[], metavar="ID", help="re-queue this dead letter"
    )
    parser.add_argument("--retry-all", action="store_true", help="re-queue every dead letter")


def _when(ms: str) -> str:
    try:
        return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return "?"


async def _requeue(ctx: Context, entries: list[tuple[str, dict[str, str]]]) -> int:
    for entry_id, fields in entries:
        await ctx.redis.xadd(
            keys.BACKCHANNEL_STREAM,
            {"sid": fields.get("sid", ""), "sub": fields.get("sub", ""), "client": fields.get("client", "")},
        )
        await ctx.redis.xdel(keys.BACKCHANNEL_DEAD, entry_id)
    return len(entries)


async def _pending(ctx: Context) -> int:
    try:
        summary: Any = await ctx.redis.xpending(keys.BACKCHANNEL_STREAM, keys.BACKCHANNEL_GROUP)
    except Exception:  # no group yet: no worker ever ran
        return 0
    return int(summary.get("pending", 0)) if isinstance(summary, dict) else 0


def backchannel_command(args: argparse.Namespace) -> Callable[[Context], Awaitable[None]]:
    if args.retry and args.retry_all:
        raise CommandError("give --retry ID or --retry-all, not both")

    async def work(ctx: Context) -> None:
        if args.retry_all or args.retry:
            if args.retry_all:
                entries: Any = await ctx.redis.xrange(keys.BACKCHANNEL_DEAD)
            else:
                entries = []
                for entry_id in args.retry:
                    found: Any = await ctx.redis.xrange(keys.BACKCHANNEL_DEAD, entry_id, entry_id)
                    if not found:
                        raise CommandError(f"no dead letter {entry_id!r}; `peak sso backchannel` lists them")
                    entries += found
            say(f"{await _requeue(ctx, entries)} dead letters re-queued; the workers deliver them again")
            return
        waiting = int(await ctx.redis.xlen(keys.BACKCHANNEL_STREAM))
        say(f"deliveries in the stream: {waiting} ({await _pending(ctx)} under way or between attempts)")
        dead: Any = await ctx.redis.xrevrange(keys.BACKCHANNEL_DEAD, count=_LISTED)
        total = int(await ctx.redis.xlen(keys.BACKCHANNEL_DEAD))
        say(f"dead letters: {total}" + (f" (the newest {_LISTED})" if total > _LISTED else ""))
        for entry_id, f in dead:
            say(f"{entry_id}  {_when(f.get('at', ''))}  client {f.get('client', '')}  session {f.get('sid', '')}  "
                f"{f.get('attempts', '?')} attempts  last: {f.get('reason', '')}  uri {f.get('uri', '')}")  # fmt: skip

    return work
