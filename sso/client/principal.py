"""Who is calling: the principal of a verified access token (or of PEAK_ADMIN_TOKEN)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.authentication import BaseUser

__all__ = ["ADMIN_TOKEN_USER", "Principal", "admin_principal"]

ADMIN_TOKEN_USER = "admin-token"  # noqa: S105 - a username, not a secret


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


def admin_principal() -> Principal:
    """The caller presenting PEAK_ADMIN_TOKEN: no user, no session, the admin role."""
    return Principal(ADMIN_TOKEN_USER, ADMIN_TOKEN_USER, frozenset({"admin"}), "", "", 0)
