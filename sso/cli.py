"""`peak sso ...`: roles, disabling accounts, key rotation and clients (introspection, OpenID Connect)."""

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
from sso.keystore import ALGORITHMS, DEFAULT_OIDC_ALGORITHM, KeyStore
from sso.oidc import backchannel_cli
from sso.oidc.uris import uri_problem
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
        kids = await store.rotate(retire_now=args.retire_now)
        await ctx.redis.publish(keys.CHANGES_CHANNEL, "k")
        made = ", ".join(f"{kid} ({algorithm})" for algorithm, kid in kids.items())
        if args.retire_now:
            say(f"new signing keys {made}; the older public keys are withdrawn: every token they signed is "
                "refused within a second")  # fmt: skip
        else:
            say(f"new signing keys {made}; older public keys stay published until their tokens expire "
                f"(about {settings.access_token_ttl_s + 60} s)")  # fmt: skip

    return work


_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _uris(option: str, values: Sequence[str]) -> list[str]:
    for uri in values:
        problem = uri_problem(uri)
        if problem is not None:
            raise CommandError(f"{option} {uri!r}: must be {problem}")
    return list(dict.fromkeys(values))


def _add_client(args: argparse.Namespace) -> Work:
    # Retry: safe; running it again re-registers the client with the same URIs and a new secret (the last
    # one printed is the one that works).
    if not _CLIENT_NAME.match(args.name):
        raise CommandError(f"a client name is 1 to 64 letters, digits, '.', '_' or '-', not {args.name!r}")
    redirect_uris = _uris("--redirect-uri", args.redirect_uri)
    logout_uris = _uris("--post-logout-redirect-uri", args.post_logout_redirect_uri)
    backchannel = _uris(
        "--backchannel-logout-uri", [args.backchannel_logout_uri] if args.backchannel_logout_uri else []
    )
    algorithm = args.id_token_signed_response_alg
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise CommandError(
            f"--id-token-signed-response-alg must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}"
        )
    oidc = bool(redirect_uris)
    if not oidc and (args.public or logout_uris or backchannel or args.allow_no_pkce or algorithm):
        raise CommandError(
            "--public, --post-logout-redirect-uri, --backchannel-logout-uri, --allow-no-pkce and "
            "--id-token-signed-response-alg are for OpenID Connect clients: give at least one --redirect-uri"
        )
    if args.public and args.allow_no_pkce:
        raise CommandError("a public client always uses PKCE: --allow-no-pkce is for confidential clients")

    async def work(ctx: Context) -> None:
        secret = await Clients(ctx.db).add(
            args.name,
            redirect_uris=redirect_uris,
            public=args.public,
            post_logout_redirect_uris=logout_uris,
            backchannel_logout_uri=backchannel[0] if backchannel else None,
            allow_no_pkce=args.allow_no_pkce,
            id_token_signed_response_alg=algorithm or DEFAULT_OIDC_ALGORITHM,
        )
        await ctx.redis.publish(keys.CHANGES_CHANNEL, "c")
        kind = (
            ("public OpenID Connect client" if args.public else "OpenID Connect client") if oidc else "client"
        )
        if secret is None:
            say(f"{kind} {args.name} registered (no secret: it must use PKCE)")
            return
        say(f"{kind} {args.name} registered; its secret (shown only now, stored hashed):")
        say(secret)

    return work


def _list_clients(args: argparse.Namespace) -> Work:
    async def work(ctx: Context) -> None:
        rows = await Clients(ctx.db).listed()
        if not rows:
            say("no clients; register one with `peak sso add-client NAME [--redirect-uri URI ...]`")
        for row in rows:
            uris = list(row["redirect_uris"])
            kind = ("oidc public" if row["public"] else "oidc confidential") if uris else "introspection"
            flags = ("  allow-no-pkce" if row["allow_no_pkce"] else "") + (
                f"  id-token-alg {row['id_token_signed_response_alg']}" if uris else ""
            )
            say(f"{row['name']}  {kind}{flags}")
            for label, values in (
                ("redirect", uris),
                ("post-logout", row["post_logout_redirect_uris"]),
                ("backchannel", [row["backchannel_logout_uri"]] if row["backchannel_logout_uri"] else []),
            ):
                for value in values:
                    say(f"    {label}: {value}")

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
    rotate = commands.add_parser(
        "rotate-keys", help="sign with new keys (one per algorithm); old public keys stay published"
    )
    rotate.add_argument(
        "--retire-now",
        action="store_true",
        help="withdraw the old public keys at once (a leaked key): every token they signed stops working",
    )
    rotate.set_defaults(func=_in_context(_rotate_keys, components))
    client = commands.add_parser(
        "add-client",
        help="register an introspection or OpenID Connect client; prints its secret once (none if public)",
    )
    client.add_argument("name")
    client.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="an OpenID Connect redirect URI, matched exactly (repeat for several)",
    )
    client.add_argument(
        "--public", action="store_true", help="no secret (a browser or app): PKCE is mandatory"
    )
    client.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="where /sso/end_session may send the browser back (repeat for several)",
    )
    client.add_argument("--backchannel-logout-uri", metavar="URI", help="where logout tokens are POSTed")
    client.add_argument(
        "--allow-no-pkce", action="store_true", help="let this confidential client redeem codes without PKCE"
    )
    client.add_argument(
        "--id-token-signed-response-alg",
        metavar="ALG",
        help=f"what its ID and logout tokens are signed with: {', '.join(ALGORITHMS)} (default RS256)",
    )
    client.set_defaults(func=_in_context(_add_client, components))
    listing = commands.add_parser("clients", help="list the registered clients (never a secret)")
    listing.set_defaults(func=_in_context(_list_clients, components))
    backchannel = commands.add_parser(
        "backchannel", help="back-channel logouts waiting, and the dead letters (re-queue with --retry)"
    )
    backchannel_cli.add_arguments(backchannel)
    backchannel.set_defaults(func=_in_context(backchannel_cli.backchannel_command, components))
