"""Typed client for the Routines API.

    from routines_client import RoutinesClient
    with RoutinesClient("http://127.0.0.1:8080", token=API_KEY) as client:
        me = client.agent_me()
        for routine in client.list_routines(me.company_id):
            print(routine.title, routine.status)

`AsyncRoutinesClient` has the same methods as coroutines. Every method is generated from the
API's OpenAPI document (one per operation) and returns typed models; every error status raises
a typed `RoutinesAPIError` carrying the API's message and details.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from routines_client import models
from routines_client.calls import blocking
from routines_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RoutinesAPIError,
    RoutinesClientError,
    ServerError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from routines_client.operations import AsyncOperations, SyncOperations
from routines_client.pages import Page
from routines_client.transport import ClientOptions, Transport
from routines_client.webhooks import encode_body, sign

__all__ = [
    "AsyncRoutinesClient",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "RateLimited",
    "RoutinesAPIError",
    "RoutinesClient",
    "RoutinesClientError",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "encode_body",
    "models",
    "new_idempotency_key",
    "paginate",
    "sign",
]

T = TypeVar("T")


def new_idempotency_key() -> str:
    """A fresh key for one logical request: send the same key on every retry of it."""
    return uuid.uuid4().hex


class AsyncRoutinesClient(AsyncOperations):
    """The asynchronous client (aiohttp). Use as `async with AsyncRoutinesClient(...) as client`."""

    def __init__(self, base_url: str, token: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._transport = Transport(base_url, token, **options)

    @property
    def transport(self) -> Transport:
        return self._transport

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send_webhook(
        self,
        public_id: str,
        secret: str,
        mode: str,
        payload: Any = None,
        *,
        delivery_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.WebhookAccepted:
        """Sign `payload` for the trigger's signing mode and fire it at the webhook gateway.

        Without a `gateway_url` option the fire goes to the API first, which refuses it (404) and
        names the gateway (`details.gatewayUrl`); the client then uses that URL, for this fire
        and the next ones.
        """
        body = encode_body({} if payload is None else payload)
        headers = sign(mode, secret, body, delivery_id=delivery_id)  # type: ignore[arg-type]
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            return await self.fire_webhook_trigger(public_id, body=body, headers=headers)
        except NotFound as exc:
            gateway = exc.details.get("gatewayUrl") if isinstance(exc.details, dict) else None
            transport = self._transport
            if transport.gateway_url_given or not isinstance(gateway, str) or not gateway:
                raise
            if gateway.rstrip("/") == transport.gateway_url:
                raise
            transport.gateway_url = gateway.rstrip("/")
            return await self.fire_webhook_trigger(public_id, body=body, headers=headers)


class RoutinesClient(SyncOperations):
    """The blocking client: the same methods, run on a private event loop.

    Use it from synchronous code; inside a running event loop use `AsyncRoutinesClient`.
    """

    def __init__(self, base_url: str, token: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncRoutinesClient(base_url, token, **options)

    @property
    def async_client(self) -> AsyncRoutinesClient:
        assert isinstance(self._client, AsyncRoutinesClient)
        return self._client

    def _run(self, awaitable: Awaitable[T]) -> T:
        return self._loop.run_until_complete(awaitable)

    send_webhook = blocking(AsyncRoutinesClient.send_webhook)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.async_client.close())
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def paginate(
    fetch: Callable[..., Awaitable[Any]], *args: Any, page_size: int = 100, **kwargs: Any
) -> AsyncIterator[Any]:
    """Every item of a listing, page by page: follows each page's `next_cursor` (the API's
    `X-Next-Cursor` header) while there is one; a listing without cursors is one page."""
    cursor: str | None = None
    while True:
        call_kwargs = dict(kwargs)
        if cursor is not None:
            call_kwargs["cursor"] = cursor
        page = await fetch(*args, limit=page_size, **call_kwargs)
        for item in page:
            yield item
        cursor = getattr(page, "next_cursor", None)
        if not cursor:
            return
