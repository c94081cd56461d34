"""The authorization endpoint's refusals (RFC 6749 4.1.2.1): those shown as a page, never redirected (an
unknown client, a redirect URI not registered), and those sent back to the client's redirect URI."""

from __future__ import annotations

from kit.errors import ApiError

__all__ = ["AuthorizationRefused", "NotRedirectable"]


class NotRedirectable(ApiError):
    """The request names no registered client or redirect URI: a 400 page, so nobody can use the endpoint
    to send a browser to an address of their choosing."""

    status_code = 400
    code = "invalid_request"


class AuthorizationRefused(ApiError):
    """A refusal for the client: ``code`` is the RFC 6749 / OpenID Connect ``error`` sent back to its redirect
    URI (``invalid_request``, ``unsupported_response_type``, ``invalid_scope``, ``login_required``, ...),
    the message its ``error_description``."""

    status_code = 400

    def __init__(self, error: str, description: str, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(description, code=error)
        self.redirect_uri = redirect_uri
        self.state = state
