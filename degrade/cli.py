"""`peak degrade ls | set NAME open|shed|auto|partial:NN --reason TEXT [--force] | audit | plan ...`
(plans: degrade/plan_cli.py)."""

from __future__ import annotations

import argparse
import functools
import getpass
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from degrade import store
from degrade.board import Board
from degrade.ops import set_switch
from degrade.plan_cli import add_plan_commands
from degrade.tiers import PERCENT_MAX, PERCENT_MIN, parse_mode
from kit.commands import CommandError, cli_context, load_settings, run, say, whole_number
from kit.component import Component
from kit.context import Context
from kit.errors import ApiError

__all__ = ["add_commands"]

T = TypeVar("T")
Parts = Sequence[Component]


async def _board(ctx: Context) -> Board:
    board = Board.from_components(ctx.components)
    board.replace(await store.load(ctx.redis))
    return board


def _in_context(parts: Parts, work: Callable[[Context], Awaitable[T]]) -> T:
    settings = load_settings(parts)

    async def main() -> T:
        async with cli_context(settings, parts) as ctx:
            try:
                return await work(ctx)
            except RedisError as exc:
                raise CommandError(f"Redis cannot be reached ({exc}); is the stack up (`peak up`)?") from None
            except ApiError as exc:
                raise CommandError(exc.message) from None

    return run(main)


def _ls(parts: Parts, args: argparse.Namespace) -> int:
    async def work(ctx: Context) -> list[dict[str, Any]]:
        board = await _board(ctx)
        return [board.describe(n) for n in sorted(board.subsystems)]

    rows = _in_context(parts, work)
    say(f"{'NAME':<18} {'TIER':<15} {'MODE':<10} {'STATE':<7} {'SINCE':<24} {'BY':<20} REASON")
    for r in rows:
        mode = f"partial:{r['percent']}" if r["mode"] == "partial" else r["mode"]
        say(
            f"{r['name']:<18} {r['tier']:<15} {mode:<10} {r['effective']:<7} {r['since'] or '-':<24} "
            f"{r['changed_by'] or '-':<20} {r['reason'] or ''}"
        )
    return 0


def _mode(value: str) -> str:
    """open, shed, auto or partial:NN (NN from 1 to 99), as stored."""
    if value in ("open", "shed", "auto") or parse_mode(value)[0] == "partial":
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: use open, shed, auto or partial:NN with NN from {PERCENT_MIN} to {PERCENT_MAX}"
    )


def _set(parts: Parts, args: argparse.Namespace) -> int:
    who = f"cli:{getpass.getuser()}"

    async def work(ctx: Context) -> dict[str, Any]:
        return await set_switch(
            ctx, await _board(ctx), args.name,
            mode=args.mode, tier=args.tier, reason=args.reason, who=who, force=args.force,
        )  # fmt: skip

    result = _in_context(parts, work)
    verb = "set" if result["changed"] else "already"
    mode = f"partial:{result['percent']}" if result["mode"] == "partial" else result["mode"]
    say(f"{result['name']}: {verb} mode {mode}, tier {result['tier']}, now {result['effective']}")
    return 0


def _audit(parts: Parts, args: argparse.Namespace) -> int:
    async def work(ctx: Context) -> tuple[list[dict[str, Any]], str | None]:
        if not args.newest:
            return await store.audit(ctx.redis, since=args.since, limit=args.limit), None
        return await store.audit_page(
            ctx.redis, name=args.name, by=args.by, before=args.before, limit=min(args.limit, 1000)
        )

    entries, more = _in_context(parts, work)
    for e in entries:
        say(
            f"{e['at']}  {e['name']:<18} {e['field']:<5} {e['old']:>5} -> {e['new']:<5} "
            f"{e['source']:<10} {e['by']:<24} {e['reason']}"
        )
    if more is not None:
        say(f"(more: --before {more})")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], parts: Parts) -> None:
    parser = sub.add_parser("degrade", help="switches of the degradation controller")
    cmds = parser.add_subparsers(dest="degrade_command", required=True, metavar="ACTION")
    listing = cmds.add_parser("ls", help="every subsystem's tier, mode and state")
    listing.set_defaults(func=functools.partial(_ls, parts))
    setter = cmds.add_parser("set", help="set a subsystem's mode (audited)")
    setter.add_argument("name")
    setter.add_argument("mode", type=_mode, nargs="?", help="open, shed, auto or partial:NN (NN % shed)")
    setter.add_argument("--reason", required=True, help="why; goes to the audit log")
    setter.add_argument("--tier", choices=("critical_plus", "critical", "sheddable_plus", "sheddable"))
    setter.add_argument(
        "--force",
        action="store_true",
        help="needed to shed a core subsystem, to give one a non-core tier, or to let the controller shed one",
    )
    setter.set_defaults(func=functools.partial(_set, parts))
    audit = cmds.add_parser("audit", help="the audit log, oldest first (or --newest first, filtered)")
    audit.add_argument("--since", help="ISO time, epoch ms or an entry id")
    audit.add_argument("--newest", action="store_true", help="newest first, with --name, --by and --before")
    audit.add_argument("--name", help="--newest: a subsystem (plans touching it too) or a plan")
    audit.add_argument("--by", help="--newest: who made the change")
    audit.add_argument("--before", help="--newest: entries older than this entry id (exclusive)")
    audit.add_argument(
        "--limit", type=whole_number(1, 100_000), default=100, help="1 to 100000 entries (default 100)"
    )
    audit.set_defaults(func=functools.partial(_audit, parts))
    add_plan_commands(cmds, parts, _in_context)
