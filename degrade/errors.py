"""The degradation controller's errors, and the one place a script's status becomes one."""

from __future__ import annotations

from kit.errors import ApiError, Conflict, NotFound, ServiceUnavailable

__all__ = ["Degraded", "ForceRequired", "UnknownSubsystem", "raise_for_status"]


class Degraded(ServiceUnavailable):
    """A shed subsystem without a fallback for this request (the middleware adds ``X-Degraded``)."""

    def __init__(self, name: str, *, retry_after_s: int) -> None:
        super().__init__(
            f"{name} is switched off to protect the core of the site; try again later",
            retry_after_s=retry_after_s,
            code="degraded",
        )


class UnknownSubsystem(NotFound):
    code = "unknown_subsystem"


class ForceRequired(Conflict):
    code = "force_required"


def raise_for_status(status: str, name: str) -> None:
    """Turn a ``degrade_set`` status meant for ops into an error; the controller reads statuses itself."""
    if status in ("changed", "unchanged"):
        return
    raise ApiError(f"the switch of {name} was not changed ({status})", code=status, status_code=409)
