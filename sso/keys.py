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
    "CHANGES_CHANNEL",
    "DEVICES_KEPT",
    "JOURNALS",
    "REVOKED_JOURNAL_KEEP_S",
    "SHARDS",
    "SIGNUP_WINDOW_S",
    "account_change",
    "account_failures",
    "account_network_failures",
    "devices",
    "journal",
    "network_failures",
    "network_gate",
    "network_signups",
    "revoked_token",
    "session",
    "session_index",
    "session_prefix",
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
