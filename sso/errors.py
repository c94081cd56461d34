"""SSO's answers for clients, and the one place Lua return codes become them."""

from __future__ import annotations

from kit.errors import ApiError, Conflict, InvalidRequest, TooManyRequests, Unauthorized

__all__ = [
    "InvalidClient",
    "InvalidCredentials",
    "InvalidGrant",
    "UnsupportedGrantType",
    "UsernameTaken",
    "WeakPassword",
    "raise_for_refresh",
    "raise_for_throttle",
    "raise_for_touch",
]


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("wrong username or password")


class UsernameTaken(Conflict):
    code = "username_taken"


class WeakPassword(InvalidRequest):
    code = "weak_password"


class InvalidGrant(Unauthorized):
    code = "invalid_grant"

    def __init__(self, message: str = "the refresh token is invalid, used or its session has ended") -> None:
        super().__init__(message)


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


def raise_for_throttle(answer: list[int]) -> None:
    """``sso_throttle.lua``: {0, 0} go on, {1, s} account locked, {2, s} IP budget spent."""
    status, retry_after_s = int(answer[0]), int(answer[1])
    if status == 1:
        # The same words for existing and unknown accounts: the answer must not tell them apart.
        raise TooManyRequests(
            "too many failed logins for this account; try again later",
            retry_after_s=retry_after_s,
            code="too_many_attempts",
        )
    if status == 2:
        raise TooManyRequests(
            "too many failed logins from this address today; try again later",
            retry_after_s=retry_after_s,
            code="too_many_attempts",
        )


def raise_for_refresh(code: int) -> None:
    """``sso_refresh.lua`` (its first value): 1 rotated, 0 no session, -1 reuse (session ended), -2 unknown token."""
    if code != 1:
        raise InvalidGrant()


def raise_for_touch(code: int) -> None:
    """``sso_session_touch.lua``: 1 live, 0 ended or expired, -1 token revoked, -2 cookie mismatch."""
    if code == 0:
        raise Unauthorized("the session has ended; log in again")
    if code == -1:
        raise Unauthorized("the token has been revoked")
    if code == -2:
        raise Unauthorized("the session cookie is not valid")
