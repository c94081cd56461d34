"""Every SSO Redis key and channel name, and their lifetimes.

A user's sessions (which also hold their used refresh token hashes), their index and revoked token ids share the hash tag ``{u:<user id>}``,
so each Lua script touches one cluster slot. The login throttle counters share ``{sso-throttle}``: logins are
bounded by argon2, far below what one slot serves.
"""

from __future__ import annotations

__all__ = [
    "CHANGES_CHANNEL",
    "REVOKED_JOURNAL",
    "REVOKED_JOURNAL_KEEP_S",
    "account_failures",
    "ip_failures",
    "revoked_token",
    "session",
    "session_index",
    "session_prefix",
]

# Pub/sub channel every validator listens to: "s:<sid>" a session ended, "j:<jti>" a token was revoked,
# "k" the signing keys changed, "c" the introspection clients changed.
CHANGES_CHANNEL = "sso:changes"
# Sorted set of the same messages scored by time, polled by validators in case a pub/sub message was lost.
REVOKED_JOURNAL = "sso:revoked"
# Longer than any access token lives (at most 900 s) plus clock leeway.
REVOKED_JOURNAL_KEEP_S = 1000


def _user_tag(user_id: str) -> str:
    return f"sso:{{u:{user_id}}}"


def session_prefix(user_id: str) -> str:
    """Lua scripts append a session id to this to reach the sessions listed in the index."""
    return f"{_user_tag(user_id)}:s:"


def session(user_id: str, session_id: str) -> str:
    return session_prefix(user_id) + session_id


def session_index(user_id: str) -> str:
    return f"{_user_tag(user_id)}:sessions"


def revoked_token(user_id: str, token_id: str) -> str:
    return f"{_user_tag(user_id)}:jti:{token_id}"


def account_failures(username: str) -> str:
    return f"sso:{{sso-throttle}}:account:{username.casefold()}"


def ip_failures(ip: str) -> str:
    return f"sso:{{sso-throttle}}:ip:{ip}"
