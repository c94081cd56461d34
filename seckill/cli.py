"""`peak seckill reconcile [EVENT] [--repair]`, `peak seckill dead-letters [--retry REF | --retry-all]`,
`peak seckill pay ORDER_ID [--payment-id ID] [--amount N]` and `peak seckill refunds [--done PAYMENT_ID]`."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx
import orjson

from kit.commands import CommandError, cli_context, load_settings, run, say
from kit.component import Component
from kit.errors import ApiError
from kit.params import ascii_int
from seckill import deadletters, payments, reconcile, rederive, refs, signature
from seckill.errors import OrderNotFound
from seckill.events import MAX_PRICE, event_id_of, iso
from seckill.orders import parse_order_id
from seckill.settings import SeckillSettings

__all__ = ["add_commands"]

T = TypeVar("T")
_CALLBACK = "/seckill/payments/callback"
_HTTP_TIMEOUT_S = 10.0


def _event_arg(raw: str) -> int:
    try:
        return event_id_of(raw)
    except ApiError:
        raise argparse.ArgumentTypeError(f"an event id is a number, got {raw!r}") from None


def _amount_arg(raw: str) -> int:
    value = ascii_int(raw)
    if value is None or value > MAX_PRICE:
        raise argparse.ArgumentTypeError(
            f"an amount is a whole number of cents up to {MAX_PRICE}, got {raw!r}"
        )
    return value


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], components: Sequence[Component]
) -> None:
    parser = sub.add_parser("seckill", help="flash-sale operations")
    commands = parser.add_subparsers(dest="seckill_command", required=True, metavar="SUBCOMMAND")
    rec = commands.add_parser(
        "reconcile", help="check stock_total = left + queued + pending + paid + dead letters; exit 1 on drift"
    )
    rec.add_argument("event", nargs="?", type=_event_arg, help="one event id (default: every event)")
    rec.add_argument(
        "--repair",
        action="store_true",
        help="first re-derive the event's Redis stock and counts from PostgreSQL (as after a Redis failover; "
        "purchases pause for the milliseconds it takes) and print each change, before -> after",
    )
    rec.set_defaults(func=functools.partial(_reconcile, components))
    dead = commands.add_parser("dead-letters", help="list dead-lettered order messages, or retry them")
    dead.add_argument("--event", type=_event_arg, help="only this event")
    group = dead.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="REF", help="put one back on its stream (REF as listed: EVENT:ID)")
    group.add_argument("--retry-all", action="store_true", help="put every listed one back on its stream")
    dead.set_defaults(func=functools.partial(_dead_letters, components))
    pay = commands.add_parser(
        "pay", help="sign a payment callback for an order as the payment provider does and send it to the API"
    )
    pay.add_argument("order_id", metavar="ORDER_ID")
    pay.add_argument(
        "--payment-id",
        help="the payment's id (default ops-ORDER_ID, so running the command again answers the same)",
    )
    pay.add_argument("--amount", type=_amount_arg, help="amount paid, in cents (default: the order's price)")
    pay.set_defaults(func=functools.partial(_pay, components))
    refunds = commands.add_parser(
        "refunds", help="list payments to refund (the order was cancelled or paid already, or a wrong amount)"
    )
    refunds.add_argument(
        "--done", metavar="PAYMENT_ID", help="mark this payment refunded; it leaves the list"
    )
    refunds.set_defaults(func=functools.partial(_refunds, components))


def _reconcile(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)

    async def main() -> int:
        drifting = 0
        async with cli_context(settings, components) as ctx:
            if args.repair and args.event is None:
                raise CommandError("--repair takes one event: peak seckill reconcile EVENT --repair")
            ids = [args.event] if args.event is not None else await reconcile.event_ids(ctx)
            if not ids:
                say("no sale events")
            for event_id in ids:
                if args.repair:
                    done = await rederive.repair_now(ctx, event_id)
                    for change in done.changes:
                        say(f"event {event_id}: repaired {change}")
                    if not done.repaired:
                        say(f"event {event_id}: not in Redis, nothing to repair")
                    elif not done.changes:
                        say(f"event {event_id}: re-derived, nothing changed")
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


def _pay(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)
    secrets = settings.of(SeckillSettings).payment_secrets()
    if not secrets:
        raise CommandError(
            "PEAK_PAYMENT_SECRET is not set: set it to a secret the API verifies payment callbacks with "
            "(the first one of the list signs)"
        )
    try:
        order_id = str(parse_order_id(args.order_id))
    except OrderNotFound:
        raise CommandError(
            f"{args.order_id!r} is not an order id (a UUID as the purchase answered)"
        ) from None
    amount = args.amount
    if amount is None:

        async def price() -> int | None:
            async with cli_context(settings, components) as ctx:
                return await payments.order_price(ctx, order_id)

        amount = _run(price)
        if amount is None:
            raise CommandError(f"there is no order {order_id}; give --amount to send the callback anyway")
    body = orjson.dumps(
        {"payment_id": args.payment_id or f"ops-{order_id}", "order_id": order_id, "amount": amount}
    )
    url = settings.public_base_url() + _CALLBACK
    headers = {"Content-Type": "application/json", signature.HEADER: signature.sign(secrets[0], body)}
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=_HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise CommandError(
            f"cannot reach the API at {url} ({type(exc).__name__}: {exc}); start it (`peak up`, `peak serve`) "
            "or set PEAK_PUBLIC_URL to where it answers"
        ) from None
    say(f"{answer.status_code} {answer.text}")
    return 0 if answer.status_code == 200 else 1


def _refunds(components: Sequence[Component], args: argparse.Namespace) -> int:
    settings = load_settings(components)

    async def main() -> int:
        async with cli_context(settings, components) as ctx:
            if args.done is not None:
                if not await payments.mark_refunded(ctx, args.done):
                    raise CommandError(
                        f"no refund due for payment {args.done!r}; list them with `peak seckill refunds`"
                    )
                say(f"payment {args.done} is marked refunded")
                return 0
            due = await payments.refunds_due(ctx)
            for p in due:
                say(
                    f"{p['payment_id']}  order={p['order_id']}  event={p['event_id']}  user={p['user_id']}  "
                    f"amount={p['amount']}  reason={p['reason']}  received={iso(p['received_at'])}"
                )
            say(f"{len(due)} refund(s) due")
            return 0

    return _run(main)


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return run(main)
    except ApiError as exc:
        raise CommandError(exc.message) from None
