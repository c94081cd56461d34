"""SSO's answers for clients; ``sso/scripts.py`` is the one place Lua return codes become them."""

from __future__ import annotations

from kit.errors import ApiError, Conflict, InvalidRequest, TooManyRequests, Unauthorized

__all__ = [
    "AccountLocked",
    "InvalidClient",
    "InvalidCookie",
    "InvalidCredentials",
    "InvalidGrant",
    "IpBudgetSpent",
    "RefreshTokenReused",
    "SessionEnded",
    "TokenRevoked",
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


class InvalidGrant(Unauthorized):
    code = "invalid_grant"

    def __init__(self, message: str = "the refresh token is invalid, used or its session has ended") -> None:
        super().__init__(message)


class RefreshTokenReused(InvalidGrant):
    """An already used refresh token came back: its session is now ended for every holder."""


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
    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed logins from this address today; try again later", retry_after_s=retry_after_s
        )
