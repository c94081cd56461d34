"""Admin bearer tokens for ops scripts: ``PEAK_ADMIN_TOKENS`` (name=token pairs) and the older single
``PEAK_ADMIN_TOKEN``, which is named ``admin-token``. The name is who the audit says acted."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kit.settings import Settings, SettingsError

if TYPE_CHECKING:
    from kit.context import Context

__all__ = ["LEGACY_NAME", "AdminTokens"]

LEGACY_NAME = "admin-token"


class AdminTokens:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        # name -> token
        self._tokens = dict(tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminTokens:
        tokens: dict[str, str] = {}
        for pair in (settings.admin_tokens or "").split(","):
            if not pair.strip():
                continue
            name, sep, token = pair.strip().partition("=")
            name, token = name.strip(), token.strip()
            if not sep or not name or not token:
                raise SettingsError("PEAK_ADMIN_TOKENS must be comma-separated name=token pairs")
            if name in tokens or name == LEGACY_NAME:
                raise SettingsError(
                    f"PEAK_ADMIN_TOKENS names {name!r} twice (or as the reserved admin-token)"
                )
            tokens[name] = token
        if settings.admin_token:
            tokens[LEGACY_NAME] = settings.admin_token
        return cls(tokens)

    @classmethod
    def of(cls, ctx: Context) -> AdminTokens:
        """The process's admin tokens, parsed from its settings on first use and kept in its context."""
        found = ctx.find(cls)
        if found is None:
            found = cls.from_settings(ctx.settings)
            ctx.put(found)
        return found

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tokens)

    def name_for(self, token: str) -> str | None:
        """The name of the admin token presented, or None; every token is compared in constant time."""
        found = None
        presented = token.encode()
        for name, expected in self._tokens.items():
            if hmac.compare_digest(presented, expected.encode()):
                found = name
        return found
