"""One domain error hierarchy; HTTP statuses are assigned here and nowhere else."""

from __future__ import annotations

from typing import Any


class RoutinesError(Exception):
    """Internal error."""

    status = 500

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        self.message = message or (self.__doc__ or "error").strip().rstrip(".")
        self.details = details
        super().__init__(self.message)


class ConfigurationError(RoutinesError):
    """Invalid configuration."""


class BadRequest(RoutinesError):
    """Malformed request."""

    status = 400


class Unauthorized(RoutinesError):
    """Missing or invalid credentials."""

    status = 401


class Forbidden(RoutinesError):
    """Not allowed."""

    status = 403


class NotFound(RoutinesError):
    """Not found."""

    status = 404


class Conflict(RoutinesError):
    """Conflicts with the current state."""

    status = 409


class RequestTimeout(RoutinesError):
    """The request body did not arrive in time (the connection is closed after the answer)."""

    status = 408


class PayloadTooLarge(RoutinesError):
    """Request body too large."""

    status = 413


class UnsupportedMediaType(RoutinesError):
    """Unsupported media type."""

    status = 415


class Unprocessable(RoutinesError):
    """Semantically invalid input."""

    status = 422


class RateLimited(RoutinesError):
    """Too many requests."""

    status = 429

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, {"retryAfterSec": retry_after})
        self.retry_after = retry_after


class ServiceUnavailable(RoutinesError):
    """A dependency is unavailable; retry later."""

    status = 503


class InvalidCron(Unprocessable):
    """Invalid cron expression."""


class InvalidTimezone(Unprocessable):
    """Unknown time zone."""
