"""An authorization request (``GET /sso/authorize``) read and checked, in RFC 6749 4.1.2.1's order: first
the client and the redirect URI (a refusal of either is a page, ``NotRedirectable``), then everything else
(a refusal goes back to the redirect URI, ``AuthorizationRefused``, with the ``state`` when it is sane).

Every parameter appears at most once (RFC 6749 3.1) and is bounded in length; the redirect URI must equal
one of the client's registered URIs exactly, as a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlencode

from sso.clients import OidcClient
from sso.oidc.errors import AuthorizationRefused, NotRedirectable
from sso.oidc.uris import MAX_URI_LENGTH

__all__ = [
    "PARAMETERS",
    "SCOPES",
    "AuthorizationRequest",
    "client_id_in",
    "grouped",
    "read_request",
]

# The parameters read, with the longest value each may have.
PARAMETERS = {
    "response_type": 64, "client_id": 64, "redirect_uri": MAX_URI_LENGTH, "scope": 1024, "state": 1024,
    "nonce": 512, "code_challenge": 128, "code_challenge_method": 16, "prompt": 64, "max_age": 9,
    "login_hint": 256, "response_mode": 32, "request": 1, "request_uri": 1,
}  # fmt: skip
# What the code and the tokens can carry; other requested scopes are left out (RFC 6749 3.3).
SCOPES = ("openid", "profile")
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
_NO_PROMPTS: frozenset[str] = frozenset()
# RFC 7636 4.1: 43 to 128 unreserved characters (S256's is 43).
_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USERNAME_MAX = 64
_READ_FIRST = ("client_id", "redirect_uri", "request", "request_uri")
_READ_THEN = tuple(name for name in PARAMETERS if name not in _READ_FIRST)
_ABSENT: dict[str, str | None] = dict.fromkeys(_READ_THEN)


class AuthorizationRequest(NamedTuple):
    """A checked request (a NamedTuple: a frozen dataclass's ``__init__`` cost the hop 3.7 us, this 1)."""

    client: OidcClient
    redirect_uri: str
    state: str | None
    scope: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    # The password must be asked again: prompt=login (or select_account).
    fresh_login: bool
    # prompt=none: never show a page.
    no_prompt: bool
    max_age: int | None
    login_hint: str

    def pending(self) -> str:
        """The request as the sign-in form posts it back (signed by its CSRF token): what a sign-in needs,
        without prompt and max_age, which that sign-in satisfies."""
        fields = {"response_type": "code", "client_id": self.client.name, "redirect_uri": self.redirect_uri,
                  "scope": self.scope, "state": self.state, "nonce": self.nonce,
                  "code_challenge": self.code_challenge, "code_challenge_method": self.code_challenge_method,
                  "login_hint": self.login_hint}  # fmt: skip
        return urlencode({k: v for k, v in fields.items() if v})


def grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The values of each parameter read, in order (``sso.oidc.hop.grouped_query`` reads a query so)."""
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in PARAMETERS:
            found.setdefault(name, []).append(value)
    return found


def _single(found: dict[str, list[str]], name: str) -> str | None:
    values = found.get(name)
    if not values or values == [""]:
        return None
    if len(values) > 1:
        raise ValueError(f"'{name}' is given more than once")
    value = values[0]
    if len(value) > PARAMETERS[name]:
        raise ValueError(f"'{name}' is longer than {PARAMETERS[name]} characters")
    # An ASCII value is printable exactly when it holds no control character (the usual case, without the
    # regex's search).
    if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
        raise ValueError(f"'{name}' holds control characters")
    return value


def _then(found: dict[str, list[str]]) -> dict[str, str | None]:
    """``_single`` of every parameter of ``_READ_THEN``, the first refusal in that order: a pass over the
    parameters given, each plain one (once, short, printable ASCII) taken as it is (3.1 us against 5.5)."""
    values = dict(_ABSENT)
    for name, given in found.items():
        if name not in values:
            continue
        value = given[0]
        if len(given) == 1 and len(value) <= PARAMETERS[name] and value.isascii() and value.isprintable():
            values[name] = value or None
        else:
            return {name: _single(found, name) for name in _READ_THEN}
    return values


def read_request(found: dict[str, list[str]], client: OidcClient | None) -> AuthorizationRequest:
    """The request of the parameters as ``grouped`` gives them, or NotRedirectable / AuthorizationRefused.
    ``client`` is the registered client that ``client_id`` (see ``client_id_in``) names, None when none does."""
    try:
        client_id, redirect_uri = _single(found, "client_id"), _single(found, "redirect_uri")
    except ValueError as exc:
        raise NotRedirectable(f"{exc}: the request cannot be trusted") from None
    if client_id is None or client is None or client.name != client_id:
        raise NotRedirectable("this application is not registered here (unknown client_id)")
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise NotRedirectable("the redirect_uri is not one registered for this application")
    state = _state(found)

    def refuse(error: str, description: str) -> AuthorizationRefused:
        return AuthorizationRefused(error, description, redirect_uri=redirect_uri, state=state)

    if found.get("request"):
        raise refuse("request_not_supported", "request objects are not supported")
    if found.get("request_uri"):
        raise refuse("request_uri_not_supported", "request_uri is not supported")
    try:
        values = _then(found)
    except ValueError as exc:
        raise refuse("invalid_request", str(exc)) from None
    response_type = values["response_type"]
    if response_type is None:
        raise refuse("invalid_request", "response_type is required")
    if response_type != "code":
        raise refuse("unsupported_response_type", "only response_type=code is supported")
    if values["response_mode"] not in (None, "query"):
        raise refuse("invalid_request", "only response_mode=query is supported")
    requested = (values["scope"] or "").split(" ")
    if "openid" not in requested:
        raise refuse("invalid_scope", "the scope must contain openid")
    scope = "openid" if len(requested) == 1 else " ".join(s for s in SCOPES if s in requested)
    challenge, method = values["code_challenge"], values["code_challenge_method"]
    if method is not None and method != "S256":
        raise refuse("invalid_request", "code_challenge_method must be S256")
    if challenge is not None:
        if method is None:
            raise refuse("invalid_request", "code_challenge_method=S256 is required (plain is not supported)")
        if not _CHALLENGE.match(challenge):
            raise refuse("invalid_request", "code_challenge must be 43 to 128 characters [A-Za-z0-9._~-]")
    elif method is not None:
        raise refuse("invalid_request", "code_challenge_method without code_challenge")
    elif client.public or not client.allow_no_pkce:
        raise refuse(
            "invalid_request", "PKCE is required: send code_challenge and code_challenge_method=S256"
        )
    prompts = set(prompt.split(" ")) - {""} if (prompt := values["prompt"]) else _NO_PROMPTS
    if prompts - _PROMPTS:
        raise refuse("invalid_request", "prompt must be none, login, consent or select_account")
    if "none" in prompts and len(prompts) > 1:
        raise refuse("invalid_request", "prompt=none cannot be combined with other values")
    max_age = values["max_age"]
    if max_age is not None and not (max_age.isascii() and max_age.isdigit()):
        raise refuse("invalid_request", "max_age must be a whole number of seconds")
    hint = values["login_hint"] or ""
    return AuthorizationRequest(
        client=client, redirect_uri=redirect_uri, state=state, scope=scope, nonce=values["nonce"] or "",
        code_challenge=challenge or "", code_challenge_method=method or "",
        fresh_login=bool(prompts & {"login", "select_account"}), no_prompt="none" in prompts,
        max_age=None if max_age is None else int(max_age),
        login_hint=hint if not hint or (len(hint) <= _USERNAME_MAX and not _CONTROL.search(hint)) else "",
    )  # fmt: skip


def _state(found: dict[str, list[str]]) -> str | None:
    """The state to send back: only a single, bounded one without control characters (else none is sent,
    and the request is refused for it)."""
    try:
        return _single(found, "state")
    except ValueError:
        return None


def client_id_in(found: dict[str, list[str]]) -> str | None:
    """The one ``client_id`` of the request (parameters as ``grouped`` gives them), if it has exactly one of a
    sane length."""
    try:
        return _single(found, "client_id")
    except ValueError:
        return None
