"""Who is calling: the principal of a verified access token (or of an admin token, named by its name)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.authentication import BaseUser

from kit.admins import LEGACY_NAME

__all__ = ["ADMIN_TOKEN_USER", "Principal", "admin_principal"]

# The name of the single PEAK_ADMIN_TOKEN: who the audit says acted when it was used.
ADMIN_TOKEN_USER = LEGACY_NAME


@dataclass(frozen=True, slots=True)
class Principal(BaseUser):
    user_id: str
    username: str
    roles: frozenset[str]
    session_id: str
    token_id: str
    expires_at: int
    issued_at: int = 0
    # RFC 9068 `client_id`: the client the token was issued to.
    client_id: str = ""
    # The signing key's id, and the account version (``ver``) the roles were issued at.
    key_id: str = ""
    version: int = 0
    # The OAuth 2.0 ``scope`` an OpenID Connect client's token was granted; None for the first-party login's.
    scope: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.username

    @property
    def identity(self) -> str:
        return self.user_id


def admin_principal(name: str = ADMIN_TOKEN_USER) -> Principal:
    """The caller presenting the admin token ``name`` (PEAK_ADMIN_TOKENS, or PEAK_ADMIN_TOKEN's
    ``admin-token``): no session, the admin role, the token's name as user and username."""
    return Principal(name, name, frozenset({"admin"}), "", "", 0)
