"""`peak sso ...`: roles, disabling accounts, key rotation and introspection clients."""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable, Sequence

from kit.commands import CommandError, cli_context, load_settings, run, say
from kit.component import Component
from kit.context import Context
from sso import keys
from sso.accounts import Account, Accounts
from sso.clients import Clients
from sso.keystore import KeyStore
from sso.sessions import Sessions
from sso.settings import SsoSettings

__all__ = ["add_commands"]

_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

# What a command does once its arguments are checked, given a context of every component.
Work = Callable[[Context], Awaitable[None]]
Command = Callable[[argparse.Namespace], int]


def _in_context(command: Callable[[argparse.Namespace], Work], components: Sequence[Component]) -> Command:
    # The arguments are checked before the settings are read, so a wrong role fails without a stack.

    def run_command(args: argparse.Namespace) -> int:
        work = command(args)
        settings = load_settings(components)

        async def main() -> None:
            async with cli_context(settings, components) as ctx:
                await work(ctx)

        run(main)
        return 0

    return run_command


def _found(account: Account | None, username: str) -> Account:
    if account is None:
        raise CommandError(f"no user {username!r}; create it with POST /sso/users first")
    return account


def _set_role(args: argparse.Namespace) -> Work:
    granted = args.sso_command == "grant"
    if not _ROLE.match(args.role):
        raise CommandError(f"a role is a lowercase word (letters, digits, _ or -), not {args.role!r}")
    if args.role == "shopper" and not granted:
        raise CommandError("every user is a shopper; that role cannot be revoked")

    async def work(ctx: Context) -> None:
        account = _found(await Accounts(ctx.db).set_role(args.user, args.role, granted=granted), args.user)
        # After the database: a login or refresh racing this reads the roles again (sso/lua/session_open.lua).
        await Sessions(ctx.redis, ctx.settings.of(SsoSettings)).change_roles(account.id, account.roles)
        say(f"{account.username} now has roles: {', '.join(account.roles)} (strict checks and admin endpoints "
            "see it at once, other validators within a second; run this again if it failed)")  # fmt: skip

    return work


def _disable(args: argparse.Namespace) -> Work:
    async def work(ctx: Context) -> None:
        account = _found(await Accounts(ctx.db).disable(args.user), args.user)
        ended = await Sessions(ctx.redis, ctx.settings.of(SsoSettings)).disable(account.id)
        say(f"{account.username} is disabled; {len(ended)} sessions ended; new logins are refused")

    return work


def _rotate_keys(args: argparse.Namespace) -> Work:
    async def work(ctx: Context) -> None:
        settings = ctx.settings.of(SsoSettings)
        secret_key = ctx.settings.secret_key
        if not secret_key:
            raise CommandError("PEAK_SECRET_KEY is not set: it encrypts the private signing keys")
        store = KeyStore(ctx.db, algorithm=settings.algorithm, secret_key=secret_key,
                         access_token_ttl_s=settings.access_token_ttl_s)  # fmt: skip
        kid = await store.rotate(retire_now=args.retire_now)
        await ctx.redis.publish(keys.CHANGES_CHANNEL, "k")
        if args.retire_now:
            say(f"new signing key {kid} ({settings.algorithm}); the older public keys are withdrawn: every "
                "token they signed is refused within a second")  # fmt: skip
        else:
            say(f"new signing key {kid} ({settings.algorithm}); older public keys stay published "
                f"until their tokens expire (about {settings.access_token_ttl_s + 60} s)")  # fmt: skip

    return work


def _add_client(args: argparse.Namespace) -> Work:
    async def work(ctx: Context) -> None:
        secret = await Clients(ctx.db).add(args.name)
        await ctx.redis.publish(keys.CHANGES_CHANNEL, "c")
        say(f"client {args.name} registered; its secret (shown only now, stored hashed):")
        say(secret)

    return work


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], components: Sequence[Component]
) -> None:
    sso = sub.add_parser("sso", help="users' roles, disabling, signing keys, introspection clients")
    commands = sso.add_subparsers(dest="sso_command", required=True, metavar="COMMAND")
    for name, text in (("grant", "give USER a role (e.g. admin)"), ("revoke", "take a role from USER")):
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("user")
        cmd.add_argument("role")
        cmd.set_defaults(func=_in_context(_set_role, components))
    disable = commands.add_parser("disable", help="end USER's sessions and refuse new logins")
    disable.add_argument("user")
    disable.set_defaults(func=_in_context(_disable, components))
    rotate = commands.add_parser("rotate-keys", help="sign with a new key; old public keys stay published")
    rotate.add_argument(
        "--retire-now",
        action="store_true",
        help="withdraw the old public keys at once (a leaked key): every token they signed stops working",
    )
    rotate.set_defaults(func=_in_context(_rotate_keys, components))
    client = commands.add_parser(
        "add-client", help="register an introspection client; prints its secret once"
    )
    client.add_argument("name")
    client.set_defaults(func=_in_context(_add_client, components))
