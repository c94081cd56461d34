"""`peak degrade plan list | show NAME | set NAME SUB=MODE... --reason R [--description D] | delete NAME
| apply NAME --reason R [--at ISO] [--force] | rollback NAME --reason R | cancel NAME --reason R`.

MODE is open, shed, auto or partial:NN (NN from 1 to 99).
"""

from __future__ import annotations

import argparse
import functools
import getpass
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from degrade import plans, store
from degrade.board import Board
from kit.commands import say
from kit.component import Component
from kit.context import Context
from kit.errors import InvalidRequest
from kit.schema import instant

__all__ = ["InContext", "add_plan_commands"]

T = TypeVar("T")
Parts = Sequence[Component]
# degrade/cli.py's runner: opens a context for the parts, runs the work, turns store and API errors into
# CommandError.
InContext = Callable[[Parts, Callable[[Context], Awaitable[Any]]], Any]


def _who() -> str:
    return f"cli:{getpass.getuser()}"


async def _board(ctx: Context) -> Board:
    board = Board.from_components(ctx.components)
    board.replace(await store.load(ctx.redis))
    return board


def _changes(pairs: Sequence[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, mode = pair.partition("=")
        if not sep or not name:
            raise InvalidRequest(f"{pair!r}: write SUBSYSTEM=MODE (open, shed, auto or partial:NN)")
        if mode.startswith("partial:"):
            digits = mode.removeprefix("partial:")
            if not (digits.isascii() and digits.isdigit()):
                raise InvalidRequest(f"{pair!r}: partial takes a percentage, e.g. partial:30")
            changes[name] = {"mode": "partial", "percent": int(digits)}
        else:
            changes[name] = mode
    return changes


def _mode(change: dict[str, Any]) -> str:
    return f"partial:{change['percent']}" if change["mode"] == "partial" else str(change["mode"])


def _line(plan: dict[str, Any]) -> str:
    changes = ",".join(f"{n}={_mode(c)}" for n, c in plan["changes"].items())
    applied = plan["applied"]
    state = f"applied {applied['at']} by {applied['by']}" if applied else "not applied"
    scheduled = f", scheduled for {plan['scheduled_at']}" if plan["scheduled_at"] else ""
    return f"{plan['name']:<24} {changes:<48} {state}{scheduled}"


def _run(in_context: InContext, parts: Parts, args: argparse.Namespace) -> int:
    action = args.plan_command

    async def work(ctx: Context) -> Any:
        if action == "list":
            return await plans.list_plans(ctx.redis)
        if action == "show":
            return await plans.get_plan(ctx.redis, args.name)
        board = await _board(ctx)
        if action == "set":
            return await plans.put_plan(
                ctx, board, args.name, _changes(args.changes),
                description=args.description, reason=args.reason, who=_who(),
            )  # fmt: skip
        if action == "delete":
            return await plans.delete_plan(ctx, board, args.name, reason=args.reason, who=_who())
        if action == "apply":
            at = None if args.at is None else instant("--at", args.at, kind="option")
            return await plans.apply_plan(
                ctx, board, args.name, reason=args.reason, who=_who(), at=at, force=args.force
            )
        if action == "rollback":
            return await plans.rollback_plan(ctx, board, args.name, reason=args.reason, who=_who())
        return await plans.cancel_plan(ctx, board, args.name, reason=args.reason, who=_who())

    result = in_context(parts, work)
    if action == "list":
        for plan in result:
            say(_line(plan))
        if not result:
            say("no plans")
    elif action == "show":
        say(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    elif action == "delete":
        say(f"{args.name}: deleted")
    elif action == "set":
        say(_line(result))
    else:
        changed = ", ".join(result.get("changed", [])) or "nothing"
        extra = f"; overridden since: {', '.join(result['overridden'])}" if result.get("overridden") else ""
        say(f"{args.name}: {result['status']} (changed {changed}{extra})")
        say(_line(result["plan"]))
    return 0


def add_plan_commands(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser], parts: Parts, in_context: InContext
) -> None:
    parser = cmds.add_parser("plan", help="degradation plans: named sets of switch changes (audited)")
    sub = parser.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    run = functools.partial(_run, in_context, parts)
    sub.add_parser("list", help="every plan").set_defaults(func=run)
    show = sub.add_parser("show", help="one plan, as JSON")
    show.add_argument("name")
    show.set_defaults(func=run)
    setter = sub.add_parser("set", help="create or replace a plan")
    setter.add_argument("name")
    setter.add_argument("changes", nargs="+", metavar="SUB=MODE", help="MODE: open, shed, auto or partial:NN")
    setter.add_argument("--description", default="", help="what the plan is for")
    setter.add_argument("--reason", required=True, help="why; goes to the audit log")
    setter.set_defaults(func=run)
    delete = sub.add_parser("delete", help="delete a plan and its schedule")
    delete.add_argument("name")
    delete.add_argument("--reason", default="deleted from the CLI", help="why; goes to the audit log")
    delete.set_defaults(func=run)
    apply = sub.add_parser("apply", help="apply a plan now, or at a time (--at)")
    apply.add_argument("name")
    apply.add_argument("--reason", required=True, help="why; goes to the audit log")
    apply.add_argument(
        "--at", help="ISO 8601 time with its zone, on the Redis clock (e.g. 2026-11-11T00:00:00Z)"
    )
    apply.add_argument("--force", action="store_true", help="needed when the plan sheds a core subsystem")
    apply.set_defaults(func=run)
    for action, text in (
        ("rollback", "restore the modes the plan's apply found"),
        ("cancel", "drop a schedule"),
    ):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("name")
        cmd.add_argument("--reason", required=True, help="why; goes to the audit log")
        cmd.set_defaults(func=run)
