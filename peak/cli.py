"""The `peak` command: the local stack, the server, the workers, migrations and each subsystem's commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from kit import migrations
from kit.commands import CommandError, cli_context, fail, load_settings, require_servers, run, say
from kit.component import Component, sections_of
from kit.logs import configure
from kit.settings import Settings, SettingsError
from kit.worker import run_worker
from loadtest.cli import add_commands as add_tool_commands
from peak.app import components
from peak.serve import server_command

__all__ = ["build_parser", "main", "settings_markdown"]


async def _migrate(settings: Settings, parts: Sequence[Component]) -> list[migrations.Migration]:
    async with cli_context(settings, parts) as ctx, ctx.db.acquire() as conn:
        return await migrations.apply(conn, migrations.discover(parts))


def _cmd_migrate(args: argparse.Namespace) -> int:
    parts = components()
    settings = load_settings(parts)
    done = run(lambda: _migrate(settings, parts))
    for m in done:
        say(f"applied {m.component}/{m.name}")
    say(f"{len(done)} migrations applied; the database is up to date")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    # The development stack is a tool beside the runtime: only this command loads it, so that no API or
    # worker process imports it (tests/test_layers.py).
    from devstack.up import run_up

    settings = Settings.from_env(sections=sections_of(components()))
    return run_up(
        settings, redis_cluster=args.redis_cluster, replicas=args.replicas, instances=args.instances
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(components())
    require_servers(settings)
    argv = server_command(settings)
    env = {**os.environ, "PEAK_REDIS_URL": settings.require("redis_url"),
           "PEAK_DATABASE_URL": settings.require("database_url")}  # fmt: skip
    os.execve(sys.executable, argv, env)  # noqa: S606 - replace this process with the server


def _cmd_worker(args: argparse.Namespace) -> int:
    parts = components()
    settings = load_settings(parts)
    require_servers(settings)
    configure(json=settings.log_json, level=settings.log_level)
    run(lambda: run_worker(settings, parts))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    if args.markdown:
        say(settings_markdown())
        return 0
    rows = Settings.describe(sections_of(components()))
    width = max(len(r[0]) for r in rows)
    for env, kind, default, doc in rows:
        say(f"{env:<{width}}  {kind:<5}  {default or '-':<12}  {doc}")
    return 0


def settings_markdown() -> str:
    """The README's settings table."""
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for env, kind, default, doc in Settings.describe(sections_of(components())):
        shown = f"`{default}`" if default else "(unset)"
        lines.append(f"| `{env}` | {kind} | {shown} | {doc.replace('|', '/')} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parts = components()
    parser = argparse.ArgumentParser(prog="peak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the whole stack on this machine")
    up.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="start a private N-master Redis Cluster (N >= 3) instead of one redis-server",
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=0,
        metavar="R",
        help="with --redis-cluster: R replicas per primary (a failover promotes one; purchases wait for it)",
    )
    up.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="run N API servers on free ports behind nginx (round-robin), which listens on PEAK_PORT",
    )
    up.set_defaults(func=_cmd_up)
    sub.add_parser("serve", help="run the API server alone (granian)").set_defaults(func=_cmd_serve)
    sub.add_parser("worker", help="run the background loops (orders, timeouts, …)").set_defaults(
        func=_cmd_worker
    )
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=_cmd_migrate)
    listing = sub.add_parser("settings", help="list every setting")
    listing.add_argument("--markdown", action="store_true", help="as the README's table")
    listing.set_defaults(func=_cmd_settings)
    for part in parts:
        if part.cli is not None:
            part.cli(sub, parts)
    add_tool_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SettingsError as exc:
        return fail(str(exc), 2)
    except CommandError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
