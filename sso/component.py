"""SSO as the composition sees it: its routes, migrations, services, commands, settings and scripts."""

from __future__ import annotations

from kit.component import Component
from sso import cli, lifespan, routes, scripts
from sso.settings import SsoSettings

__all__ = ["component"]


def component() -> Component:
    return Component(
        name="sso",
        routes=routes.routes(),
        migrations="sso",
        services=[lifespan.services],
        cli=cli.add_commands,
        settings=SsoSettings,
        scripts=scripts.ALL,
    )
