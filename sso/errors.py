"""SSO's answers for clients; ``sso/scripts.py`` is the one place Lua return codes become them."""

from __future__ import annotations

from kit.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)

__all__ = [
    "AccountDisabled",
    "AccountLocked",
    "CodeRefused",
    "CodeReused",
    "CrossSiteRequest",
    "CursorExpired",
    "HashingBusy",
    "InvalidClient",
    "InvalidCookie",
    "InvalidCredentials",
    "InvalidGrant",
    "InvalidUsername",
    "IpBudgetSpent",
    "OAuthInvalidRequest",
    "ReauthenticationRequired",
    "RefreshTokenReused",
    "SessionEnded",
    "ThrottleUnavailable",
    "TokenRevoked",
    "TooManyRefreshes",
    "TooManySignups",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UsernameTaken",
    "WeakPassword",
]


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("wrong username or password")


class SessionEnded(Unauthorized):
    def __init__(self) -> None:
        super().__init__("the session has ended; log in again")


class TokenRevoked(Unauthorized):
    def __init__(self) -> None:
        super().__init__("the token has been revoked")


class InvalidCookie(Unauthorized):
    def __init__(self) -> None:
        super().__init__("the session cookie is not valid")


class UsernameTaken(Conflict):
    code = "username_taken"


class WeakPassword(InvalidRequest):
    code = "weak_password"


class InvalidUsername(InvalidRequest):
    code = "invalid_username"

    def __init__(self) -> None:
        super().__init__("field 'username' must be 3 to 64 letters, digits or . _ @ + - (after NFKC)")


class InvalidGrant(Unauthorized):
    code = "invalid_grant"

    def __init__(self, message: str = "the refresh token is invalid, used or its session has ended") -> None:
        super().__init__(message)


class RefreshTokenReused(InvalidGrant):
    """An already used refresh token came back: its session is now ended for every holder."""


class TooManyRefreshes(TooManyRequests):
    """A session's refresh token was rotated more often than PEAK_SSO_REFRESH_MAX per window."""

    code = "too_many_refreshes"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("this session refreshed too often; try again later", retry_after_s=retry_after_s)


class AccountDisabled(Forbidden):
    code = "account_disabled"

    def __init__(self) -> None:
        super().__init__("this account is disabled")


class CrossSiteRequest(Forbidden):
    """A request that the session cookie authenticates (or that would set it) came from another site."""

    code = "csrf"

    def __init__(self) -> None:
        super().__init__(
            "this request must come from the site itself (its Origin or Referer is not the public URL)"
        )


class UnsupportedGrantType(ApiError):
    status_code = 400
    code = "unsupported_grant_type"


class InvalidClient(ApiError):
    status_code = 401
    code = "invalid_client"

    def __init__(self) -> None:
        super().__init__(
            "client authentication failed: send HTTP Basic credentials from `peak sso add-client`",
            headers={"WWW-Authenticate": 'Basic realm="peak"'},
        )


# The same words for existing and unknown accounts: the answer must not tell them apart.
class AccountLocked(TooManyRequests):
    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed logins for this account; try again later", retry_after_s=retry_after_s
        )


class IpBudgetSpent(TooManyRequests):
    """The client's network is past its daily budget: its unknown devices wait a growing delay."""

    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed logins from this network; try again shortly", retry_after_s=retry_after_s
        )


class TooManySignups(TooManyRequests):
    code = "too_many_signups"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many accounts registered from this network; try again later", retry_after_s=retry_after_s
        )


class HashingBusy(ServiceUnavailable):
    """The process's password-hashing queue is full: answered at once rather than queued without end."""

    code = "busy"

    def __init__(self) -> None:
        super().__init__("too many sign-ins at this moment; try again in a second", retry_after_s=1)


class ThrottleUnavailable(ServiceUnavailable):
    """Redis did not answer the login throttle: logins wait rather than go unthrottled."""

    def __init__(self) -> None:
        super().__init__("sign-in is unavailable for a moment; try again shortly", retry_after_s=2)


class CursorExpired(ApiError):
    """A revocation feed cursor older than the journals keep (sso.feed): what happened since is gone."""

    status_code = 410
    code = "cursor_expired"

    def __init__(self) -> None:
        super().__init__(
            "this cursor is older than the revocation journals keep; treat every cached token as unknown and"
            " read the feed again without 'since'"
        )


class ReauthenticationRequired(Unauthorized):
    """The session's password sign-in is older than the OpenID Connect client's ``max_age``."""

    code = "login_required"

    def __init__(self) -> None:
        super().__init__("sign in again: the client asks for a more recent sign-in")


# The token endpoint's answers to OAuth 2.0 clients (sso.oidc.token_endpoint renders them, and InvalidGrant,
# InvalidClient and UnsupportedGrantType, as RFC 6749 5.2 says: {"error", "error_description"}, 400 or 401).
class CodeRefused(InvalidGrant):
    """An authorization code that is unknown, expired, another client's, for another redirect_uri, with a
    PKCE verifier that does not match, or whose session has ended."""

    status_code = 400

    def __init__(self, message: str = "the authorization code is invalid or has expired") -> None:
        super().__init__(message)


class CodeReused(CodeRefused):
    """An authorization code redeemed a second time: what the first redemption issued is now revoked."""

    def __init__(self) -> None:
        super().__init__("the authorization code was already used; the tokens issued for it are revoked")


class OAuthInvalidRequest(ApiError):
    status_code = 400
    code = "invalid_request"


class UnauthorizedClient(ApiError):
    """The client may not use this grant (an introspection client, or a public client without PKCE)."""

    status_code = 400
    code = "unauthorized_client"
