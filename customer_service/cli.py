"""`peak cs dead-letters [--limit N] [--retry ID | --retry-all | --drop ID]`."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

from redis.exceptions import RedisError

from customer_service import deadletters
from kit.commands import CommandError, cli_context, load_settings, run, say, whole_number
from kit.component import Component

__all__ = ["add_commands"]

_SHOWN_CHARS = 80


def _entry_id(raw: str) -> str:
    if not deadletters.is_entry_id(raw):
        raise argparse.ArgumentTypeError(
            f"must be a dead letter id as listed (like 1764614400000-0), not {raw!r}"
        )
    return raw


def _shown(text: str) -> str:
    # Escaped: a message may hold what a terminal would act on (a NUL, escape sequences).
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."


def _dead_letters(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)

    async def main() -> int:
        async with cli_context(settings, components) as ctx:
            if args.retry:
                new_id = await deadletters.requeue(ctx, args.retry)
                if new_id is None:
                    raise CommandError(f"no dead letter {args.retry}; list them with `peak cs dead-letters`")
                say(f"{args.retry} is back in the inbox as {new_id}")
                return 0
            if args.drop:
                if not await deadletters.drop(ctx, args.drop):
                    raise CommandError(f"no dead letter {args.drop}; list them with `peak cs dead-letters`")
                say(f"{args.drop} dropped")
                return 0
            if args.retry_all:
                moved, after = 0, "-"
                while letters := await deadletters.listing(ctx, limit=500, after=after):
                    for letter in letters:
                        moved += await deadletters.requeue(ctx, letter.id) is not None
                    after = letters[-1].id
                say(f"{moved} dead letter(s) back in the inbox")
                return 0
            letters = await deadletters.listing(ctx, limit=args.limit)
            for letter in letters:
                f = letter.fields
                say(
                    f"{letter.id}  message={_shown(f.get('id', '?'))}  user={_shown(f.get('user_id', '?'))}  "
                    f"reason={_shown(letter.reason)}  text={_shown(f.get('text', ''))}"
                )
            say(f"{len(letters)} dead letter(s)")
            return 0

    try:
        return run(main)
    except RedisError as exc:
        raise CommandError(f"Redis cannot be reached ({exc}); is the stack up (`peak up`)?") from None


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], components: Sequence[Component]
) -> None:
    parser = sub.add_parser("cs", help="customer service: the inbox's dead letters")
    commands = parser.add_subparsers(dest="cs_command", required=True, metavar="ACTION")
    dead = commands.add_parser(
        "dead-letters", help="list queued support messages PostgreSQL refused; retry or drop them"
    )
    dead.add_argument(
        "--limit", type=whole_number(1, 100_000), default=100, help="list at most this many (default 100)"
    )
    group = dead.add_mutually_exclusive_group()
    group.add_argument("--retry", type=_entry_id, metavar="ID", help="put this dead letter back in the inbox")
    group.add_argument("--retry-all", action="store_true", help="put every dead letter back in the inbox")
    group.add_argument("--drop", type=_entry_id, metavar="ID", help="delete this dead letter for good")
    dead.set_defaults(func=functools.partial(_dead_letters, components))
