"""Client authentication at the token endpoint (RFC 6749 2.3.1, OpenID Connect Core 9): ``client_secret_basic``
and ``client_secret_post`` for confidential clients, ``none`` (only ``client_id``) for public ones.

Checked from memory (``sso.clients.Clients``); a secret is compared in constant time whatever the name.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from sso.clients import Clients, OidcClient
from sso.errors import InvalidClient, OAuthInvalidRequest

__all__ = ["authenticate_client", "basic_credentials"]


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(client id, secret) of an ``Authorization: Basic`` header, as sent; None for another scheme.
    InvalidClient when it cannot be read."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient() from None
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise InvalidClient()
    return name, secret


async def authenticate_client(
    clients: Clients,
    *,
    basic: tuple[str, str] | None,
    client_id: str | None,
    client_secret: str | None,
) -> OidcClient:
    """The OpenID Connect client making the request; InvalidClient for unknown ids (introspection clients
    included), wrong secrets, a confidential client without its secret or a public one with a secret."""
    if basic is not None:
        if client_secret is not None:
            raise OAuthInvalidRequest(
                "use one client authentication method, not both Basic and client_secret"
            )
        # RFC 6749 2.3.1 form-encodes both before Base64; some libraries (Authlib) do not: either is read.
        name, secret = basic
        if clients.get(name) is None:
            name = unquote_plus(name)
        if clients.get(name) is not None and not clients.verify(name, secret):
            secret = unquote_plus(secret)
        if client_id is not None and client_id != name:
            raise InvalidClient()
    elif client_id is None:
        raise InvalidClient()
    else:
        name, secret = client_id, client_secret or ""
    client = await clients.find(name)
    if (basic is None and client_secret is None) or (client is not None and client.public and not secret):
        # No secret (some libraries send a public client's id as Basic with an empty one).
        if client is None or not client.public:
            raise InvalidClient()
        return client
    # Compared first, so that an unknown name costs the same as a wrong secret.
    verified = clients.verify(name, secret)
    if client is None or client.public or not verified:
        raise InvalidClient()
    return client
