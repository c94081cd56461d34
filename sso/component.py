"""SSO as the composition sees it: its routes, migrations, services, commands, settings and scripts."""

from __future__ import annotations

from kit.component import Component
from sso import cli, lifespan, routes, scripts
from sso.oidc import backchannel_feed
from sso.oidc.backchannel_worker import backchannel_loop
from sso.settings import SsoSettings

__all__ = ["component"]


def component() -> Component:
    return Component(
        name="sso",
        routes=routes.routes(),
        migrations="sso",
        services=[lifespan.services],
        loops=[backchannel_loop],
        cli=cli.add_commands,
        settings=SsoSettings,
        scripts=(*scripts.ALL, *backchannel_feed.SCRIPTS),
    )
