"""Typed errors: every non-2xx answer becomes one of these, carrying the API's `{error, details}`."""

from __future__ import annotations

from typing import Any


class RoutinesClientError(Exception):
    """Root of every error this client raises."""


class ConnectionFailed(RoutinesClientError):
    """The server could not be reached (after retries)."""


class RoutinesAPIError(RoutinesClientError):
    """The server answered with an error status."""

    status: int = 0

    def __init__(
        self, status: int, error: str, details: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        self.details = details
        self.retry_after = retry_after


class BadRequest(RoutinesAPIError):
    """400: malformed or schema-invalid input."""


class Unauthorized(RoutinesAPIError):
    """401: missing or invalid credentials."""


class Forbidden(RoutinesAPIError):
    """403: the token may not do this."""


class NotFound(RoutinesAPIError):
    """404: no such resource (or not visible to this token)."""


class MethodNotAllowed(RoutinesAPIError):
    """405: the path exists but not with this method."""


class Conflict(RoutinesAPIError):
    """409: conflicts with the resource's current state."""


class PayloadTooLarge(RoutinesAPIError):
    """413: request body too large."""


class UnsupportedMediaType(RoutinesAPIError):
    """415: the body must be JSON."""


class Unprocessable(RoutinesAPIError):
    """422: semantically invalid (bad cron, unknown zone, payload differs for an idempotency key)."""


class RateLimited(RoutinesAPIError):
    """429: slow down; `retry_after` says for how long."""


class ServerError(RoutinesAPIError):
    """5xx other than 503."""


class Unavailable(RoutinesAPIError):
    """503: a dependency is unavailable or busy; retry later."""


_BY_STATUS: dict[int, type[RoutinesAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status: int, body: Any, retry_after: float | None = None) -> RoutinesAPIError:
    """The typed error for an answer's status and JSON body."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message, details = body["error"], body.get("details")
    else:
        message, details = (str(body)[:500] if body else f"HTTP {status}"), None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else RoutinesAPIError)
    return cls(status, message, details, retry_after)
