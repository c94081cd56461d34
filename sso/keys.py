"""Every SSO Redis key and channel name, and their lifetimes.

A user's sessions, their index, revoked token ids and account-change record share the hash tag of the user's
shard (``{u<n>...}``, one of ``SHARDS``), and so does that shard's revocation journal: a script that ends a
session also announces it (journal and channel) in the same slot, so each Lua script touches one cluster slot.
The shards' tags are picked so that their slots spread evenly over the slot space (and so over the primaries of
an evenly split cluster). The login throttle keeps two tags, so that one hot account or one
busy address does not pin every login to a single slot: an account's counters and known devices share
``{t:a:<account>}``, a client network's counters share ``{t:n:<network>}``; a login check is one script call on
each, sent together.
"""

from __future__ import annotations

import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = [
    "ACCOUNT_CHANGE_KEEP_S",
    "BACKCHANNEL_DEAD",
    "BACKCHANNEL_DEAD_KEPT",
    "BACKCHANNEL_GROUP",
    "BACKCHANNEL_STREAM",
    "CHANGES_CHANNEL",
    "DEVICES_KEPT",
    "JOURNALS",
    "OIDC_SESSION_KEEP_S",
    "REVOKED_JOURNAL_KEEP_S",
    "SHARDS",
    "SIGNUP_WINDOW_S",
    "USED_CODE_KEEP_S",
    "account_change",
    "account_failures",
    "account_network_failures",
    "auth_code",
    "backchannel_cursor",
    "backchannel_lease",
    "backchannel_outbox",
    "devices",
    "journal",
    "network_failures",
    "network_gate",
    "network_signups",
    "oidc_expiries",
    "oidc_session",
    "oidc_session_in_shard",
    "oidc_session_prefix",
    "revoked_token",
    "session",
    "session_index",
    "session_prefix",
    "shard_of",
    "shard_user_prefix",
]

# Pub/sub channel every validator listens to, each message one or more words: "s:<sid>" a session ended,
# "j:<jti>" a token was revoked, "u:<user id>:<version>" an account's roles changed or it was disabled, "k" the
# signing keys changed, "c" the introspection clients changed.
CHANGES_CHANNEL = "sso:changes"
# Longer than any access token lives (at most 900 s) plus clock leeway.
REVOKED_JOURNAL_KEEP_S = 1000
# An account-change record outlives every validator's memory of the change (REVOKED_JOURNAL_KEEP_S).
ACCOUNT_CHANGE_KEEP_S = 2 * REVOKED_JOURNAL_KEEP_S
# How long a session-ending call's answer is kept for a retry of it (longer than the Redis client's retries).
CALL_ANSWER_KEEP_S = 30
# Fixed forever: changing it moves every user's keys (every session would end).
SHARDS = 16


def _shard_tag(shard: int) -> str:
    """The first ``u<shard>.<n>`` whose slot lies in the shard's sixteenth of the slot space."""
    n = 0
    while key_slot(f"u{shard}.{n}".encode()) * SHARDS // REDIS_CLUSTER_HASH_SLOTS != shard:
        n += 1
    return f"u{shard}.{n}"


_TAGS = tuple(_shard_tag(i) for i in range(SHARDS))
# Sorted sets of the channel's session, token and account messages, one per shard, scored by the Redis clock
# (ms) and written by the script that made the change; validators poll them in case a message was lost.
JOURNALS = tuple(f"sso:{{{tag}}}:revoked" for tag in _TAGS)


def _shard(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % SHARDS


def _user_tag(user_id: str) -> str:
    return f"sso:{{{_TAGS[_shard(user_id)]}}}:{user_id}"


def journal(user_id: str) -> str:
    """The revocation journal of the user's shard."""
    return JOURNALS[_shard(user_id)]


def account_change(user_id: str) -> str:
    """Hash of the account's last change by `peak sso` (``version``, ``roles``, ``disabled``), kept
    ACCOUNT_CHANGE_KEEP_S: logins and refreshes racing a change read it."""
    return f"{_user_tag(user_id)}:account"


def session_prefix(user_id: str) -> str:
    """Lua scripts append a session id to this to reach the sessions listed in the index."""
    return f"{_user_tag(user_id)}:s:"


def session(user_id: str, session_id: str) -> str:
    return session_prefix(user_id) + session_id


def session_index(user_id: str) -> str:
    return f"{_user_tag(user_id)}:sessions"


def revoked_token(user_id: str, token_id: str) -> str:
    return f"{_user_tag(user_id)}:jti:{token_id}"


def call_answer(user_id: str, call_id: str) -> str:
    """The answer of one call of a script that is not idempotent by itself, kept for a retry of that call."""
    return f"{_user_tag(user_id)}:answer:{call_id}"


# -- OpenID Connect (issue 19) ---------------------------------------------------------------------------
# An authorization code's mark of its first redemption (`used`: the access token it issued), named by the digest
# of the sealed code (sso/oidc/codes.py), in the user's slot (the code carries the user id, as refresh tokens
# do), so its redemption and the session it belongs to are one script on one slot. A code of the release
# before 2026-12-05 has its record here too (`r`).
def auth_code(user_id: str, code_digest: str) -> str:
    return f"{_user_tag(user_id)}:code:{code_digest}"


def _shard_prefix(shard: int) -> str:
    return f"sso:{{{_TAGS[shard]}}}"


def shard_of(user_id: str) -> int:
    """The shard (0 to SHARDS - 1) whose hash tag the user's keys carry."""
    return _shard(user_id)


# The OIDC side of a session: a hash ``user_id``, ``username``, ``absolute_expires_at`` and ``c:<client_id>``
# for every client that received tokens in it (its value: when, ms), written by the code redemption and kept
# a while after the session ends, so the back-channel logout learns whom to tell. Keyed by shard and session id
# (not user id), because the revocation journal names ended sessions by id only.
# ``absolute_expires_at`` and the ``c:<client_id>`` values are ms; the hash expires this long after the session's
# absolute end.
OIDC_SESSION_KEEP_S = 86400
# A redeemed authorization code is remembered (to refuse and revoke a second redemption) this long beyond its
# lifetime (PEAK_SSO_CODE_TTL_S).
USED_CODE_KEEP_S = 600


def oidc_session(user_id: str, session_id: str) -> str:
    return oidc_session_in_shard(_shard(user_id), session_id)


def oidc_session_in_shard(shard: int, session_id: str) -> str:
    return f"{_shard_prefix(shard)}:oidc:{session_id}"


def oidc_expiries(shard: int) -> str:
    """Sorted set of the shard's sessions that have OIDC clients, scored by their absolute expiry (ms): the
    back-channel sweeper finds sessions that ended by running out of time (no script announced them)."""
    return f"{_shard_prefix(shard)}:oidc:expiries"


# The back-channel logout deliveries (one entry per client to tell), read by the workers' consumer group.
BACKCHANNEL_STREAM = "sso:backchannel"
# -- back-channel logout (area C): sso/oidc/backchannel*.py -------------------------------------------------
BACKCHANNEL_GROUP = "backchannel"
# Deliveries that failed every attempt (``peak sso backchannel`` lists them), at most about this many kept.
BACKCHANNEL_DEAD = "sso:backchannel:dead"
BACKCHANNEL_DEAD_KEPT = 10_000


def oidc_session_prefix(shard: int) -> str:
    """A session id appended gives ``oidc_session_in_shard``: for the shard's Lua scripts."""
    return f"{_shard_prefix(shard)}:oidc:"


def shard_user_prefix(shard: int) -> str:
    """A user id of the shard, ``:s:`` and a session id appended give that session's key (``session``)."""
    return f"{_shard_prefix(shard)}:"


def backchannel_cursor(shard: int) -> str:
    """The journal score (ms) up to which the shard's revocation journal was read for back-channel logouts."""
    return f"{_shard_prefix(shard)}:bc:cursor"


def backchannel_outbox(shard: int) -> str:
    """Stream of the shard's ended OIDC sessions not yet fanned out to BACKCHANNEL_STREAM."""
    return f"{_shard_prefix(shard)}:bc:outbox"


def backchannel_lease(shard: int) -> str:
    """The worker reading the shard's journal (its token), for a few seconds at a time."""
    return f"{_shard_prefix(shard)}:bc:lease"


# The known devices an account keeps; a new one beyond this replaces the one unused the longest.
DEVICES_KEPT = 10
SIGNUP_WINDOW_S = 3600


# ``account`` is the normalised username (sso.accounts.username_key), ``network`` the client network
# (sso.throttle.network_of): neither can hold a brace, so neither can move a key to another slot.
def _account_tag(account: str) -> str:
    return f"sso:{{t:a:{account}}}"


def _network_tag(network: str) -> str:
    return f"sso:{{t:n:{network}}}"


def account_failures(account: str) -> str:
    """Failed logins of the account from unknown devices, in the account window."""
    return f"{_account_tag(account)}:f"


def account_network_failures(account: str, network: str) -> str:
    """Failed logins of the account from one client network's unknown devices, in the account window."""
    return f"{_account_tag(account)}:n:{network}"


def devices(account: str) -> str:
    """Hash of the account's known devices: ``s:<digest>`` last success (ms), ``f:<digest>`` failures since."""
    return f"{_account_tag(account)}:d"


def network_failures(network: str) -> str:
    """Failed logins from the network today (attempts count until they succeed)."""
    return f"{_network_tag(network)}:f"


def network_gate(network: str) -> str:
    """Exists while the network, past its daily budget, must wait before its next unknown-device login."""
    return f"{_network_tag(network)}:g"


def network_signups(network: str) -> str:
    return f"{_network_tag(network)}:s"
