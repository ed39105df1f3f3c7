"""HTTP transport: one aiohttp session, JSON in and out, typed errors, retries with backoff."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any, TypedDict

import aiohttp

from routines_client.errors import ConnectionFailed, RoutinesClientError, error_for

RETRY_STATUSES = frozenset({429, 503})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class ClientOptions(TypedDict, total=False):
    """The clients' keyword options, handed to their `Transport` (defaults there)."""

    gateway_url: str | None
    """The webhook gateway's base URL for `send_webhook` (default: the one the API names when it
    refuses a fire, learnt on the first `send_webhook`)."""
    max_retries: int
    """How often a refused (429, 503) or unreached request is retried (default 3)."""
    timeout_sec: float
    """Of one request, in seconds (default 30)."""


class Transport:
    """Sends requests to the API (and the webhook gateway) and turns answers into data or errors.

    429 and 503 are retried (the server did not accept the request), honouring `Retry-After`,
    up to `max_retries` times with exponential backoff and jitter. Connection failures are
    retried only for idempotent methods or requests that carry an idempotency key.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        gateway_url: str | None = None,
        max_retries: int = 3,
        backoff_sec: float = 0.25,
        max_backoff_sec: float = 10.0,
        timeout_sec: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.gateway_url = (gateway_url or base_url).rstrip("/")
        self.gateway_url_given = gateway_url is not None
        self.token = token
        self.max_retries = max_retries
        self.backoff_sec = backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self._timeout = aiohttp.ClientTimeout(total=timeout_sec)
        self._session = session
        self._owns_session = session is None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_sec)
        base = min(self.backoff_sec * (2**attempt), self.max_backoff_sec)
        return float(base * (0.5 + random.random() / 2))  # jitter, not security

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        raw_body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        server: str = "api",
        authenticate: bool = True,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """One call: the status, the decoded JSON answer and the headers, or a typed error."""
        url = (self.gateway_url if server == "gateway" else self.base_url) + path
        send_headers = {"Accept": "application/json", **(headers or {})}
        if authenticate and self.token:
            send_headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = raw_body
        if data is None and body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
        if data is not None:
            send_headers.setdefault("Content-Type", "application/json")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        retry_connection = (
            method in SAFE_METHODS
            or "Idempotency-Key" in send_headers
            or (isinstance(body, dict) and bool(body.get("idempotencyKey")))
        )
        session = await self._get_session()
        attempt = 0
        while True:
            try:
                async with session.request(
                    method, url, params=query, data=data, headers=send_headers
                ) as response:
                    payload = await _decode(response)
                    if response.status < 400:
                        return response.status, payload, response.headers
                    retry_after = _retry_after(response.headers)
                    if response.status in RETRY_STATUSES and attempt < self.max_retries:
                        await asyncio.sleep(self._delay(attempt, retry_after))
                        attempt += 1
                        continue
                    raise error_for(response.status, payload, retry_after)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if retry_connection and attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise ConnectionFailed(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


async def _decode(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        if response.status < 400:
            raise RoutinesClientError(f"expected JSON from {response.url}, got {text[:200]!r}") from exc
        return text
