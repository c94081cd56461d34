"""`peak seckill reconcile [EVENT]` and `peak seckill dead-letters [--retry REF | --retry-all]`."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from kit.commands import CommandError, cli_context, load_settings, run, say
from kit.component import Component
from kit.errors import ApiError
from seckill import deadletters, reconcile, refs

__all__ = ["add_commands"]


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], components: Sequence[Component]
) -> None:
    parser = sub.add_parser("seckill", help="flash-sale operations")
    commands = parser.add_subparsers(dest="seckill_command", required=True, metavar="SUBCOMMAND")
    rec = commands.add_parser(
        "reconcile", help="check stock_total = left + queued + pending + paid + dead letters; exit 1 on drift"
    )
    rec.add_argument("event", nargs="?", type=int, help="one event id (default: every event)")
    rec.set_defaults(func=functools.partial(_reconcile, components))
    dead = commands.add_parser("dead-letters", help="list dead-lettered order messages, or retry them")
    dead.add_argument("--event", type=int, help="only this event")
    group = dead.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="REF", help="put one back on its stream (REF as listed: EVENT:ID)")
    group.add_argument("--retry-all", action="store_true", help="put every listed one back on its stream")
    dead.set_defaults(func=functools.partial(_dead_letters, components))


def _reconcile(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)

    async def main() -> int:
        drifting = 0
        async with cli_context(settings, components) as ctx:
            ids = [args.event] if args.event is not None else await reconcile.event_ids(ctx)
            if not ids:
                say("no sale events")
            for event_id in ids:
                b = await reconcile.balance(ctx, event_id)
                terms = "  ".join(f"{k}={v}" for k, v in reconcile.terms(b).items())
                problems = b.problems()
                say(f"event {event_id}: {terms}  accounted={b.accounted}  drift={b.drift}")
                for problem in problems:
                    say(f"event {event_id}: DRIFT {problem}")
                drifting += bool(problems)
        if drifting:
            say(f"{drifting} event(s) drift; see the terms above")
            return 1
        say("no drift")
        return 0

    return _run(main)


def _dead_letters(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)

    async def main() -> int:
        async with cli_context(settings, components) as ctx:
            ids = [args.event] if args.event is not None else await reconcile.event_ids(ctx)
            if args.retry:
                ref = refs.parse_dead_letter_ref(args.retry)
                if ref is None:
                    raise CommandError(
                        f"--retry takes EVENT:ID (or EVENT/BUCKET:ID) as listed, got {args.retry!r}"
                    )
                event_id, bucket, entry_id = ref
                new_id = await deadletters.requeue(ctx, event_id, entry_id, bucket)
                if new_id is None:
                    raise CommandError(
                        f"no dead letter {args.retry}; list them with `peak seckill dead-letters`"
                    )
                say(f"{args.retry} is back on its order stream as {new_id}")
                return 0
            letters = await deadletters.dead_letters(ctx, ids)
            if args.retry_all:
                for letter in letters:
                    await deadletters.requeue(ctx, letter.event_id, letter.entry_id, letter.bucket)
                say(f"{len(letters)} dead letter(s) back on their order streams")
                return 0
            for letter in letters:
                say(
                    f"{letter.ref}  order={letter.order_id}  user={letter.user_id}  "
                    f"deliveries={letter.deliveries}  reason={letter.reason}"
                )
            say(f"{len(letters)} dead letter(s)")
            return 0

    return _run(main)


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return run(main)
    except ApiError as exc:
        raise CommandError(exc.message) from None
