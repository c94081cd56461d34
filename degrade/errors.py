"""The degradation controller's errors."""

from __future__ import annotations

from kit.errors import Conflict, NotFound, ServiceUnavailable

__all__ = [
    "Degraded",
    "ForceRequired",
    "NotApplied",
    "NotScheduled",
    "SwitchRefused",
    "UnknownPlan",
    "UnknownSubsystem",
]


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


class SwitchRefused(Conflict):
    """The switch script refused an ops change; ``code`` is its status (``degrade/scripts.py``)."""

    def __init__(self, name: str, status: str) -> None:
        super().__init__(f"the switch of {name} was not changed ({status})", code=status)


class UnknownPlan(NotFound):
    code = "unknown_plan"


class NotApplied(Conflict):
    code = "not_applied"


class NotScheduled(Conflict):
    code = "not_scheduled"
