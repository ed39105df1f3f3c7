"""How a generated operation is sent: each operation is one `Call` row in the generated table
(`operations.OPERATIONS`), and every method goes through `Caller._call` (one request, one place)."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

from pydantic import BaseModel

from routines_client.pages import NEXT_CURSOR_HEADER, Page
from routines_client.transport import Transport

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")

_PLACEHOLDER = re.compile(r"{[A-Za-z_]+}")


@dataclass(frozen=True)
class Call:
    """One API operation as data: its method, its path (placeholders filled in order), where it is
    served and whether it sends the caller's token."""

    method: str
    path: str
    server: str = "api"
    authenticate: bool = True

    def url(self, path_args: tuple[str | UUID, ...]) -> str:
        values = iter(path_args)
        return _PLACEHOLDER.sub(lambda _match: str(next(values)), self.path)


def _body(body: Any) -> tuple[Any, bytes | None]:
    """(JSON body, raw body): bytes go as they are, models as their JSON by alias."""
    if isinstance(body, bytes):
        return None, body
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_unset=True), None
    if isinstance(body, Mapping):
        return dict(body), None
    return body, None


def many(model: type[M], data: Any) -> list[M]:
    return [model.model_validate(item) for item in data]


class Caller:
    """The one request every generated coroutine makes."""

    _transport: Transport

    async def _exchange(
        self,
        call: Call,
        path_args: tuple[str | UUID, ...],
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str] | None,
    ) -> tuple[Any, Mapping[str, str]]:
        json_body, raw_body = _body(body)
        _status, data, headers_in = await self._transport.request(
            call.method,
            call.url(path_args),
            params=params,
            body=json_body,
            raw_body=raw_body,
            headers=headers,
            server=call.server,
            authenticate=call.authenticate,
        )
        return data, headers_in

    async def _call(
        self,
        call: Call,
        *path_args: str | UUID,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer of one operation."""
        data, _headers = await self._exchange(call, path_args, params, body, headers)
        return data

    async def _page(
        self, model: type[M], call: Call, *path_args: str | UUID, params: Mapping[str, Any]
    ) -> Page[M]:
        """One page of a cursor-paginated listing, with the next page's cursor."""
        data, headers_in = await self._exchange(call, path_args, params, None, None)
        return Page(many(model, data), next_cursor=headers_in.get(NEXT_CURSOR_HEADER))


class BlockingCaller:
    """What every generated blocking method needs: running a coroutine or an async stream."""

    _client: Any

    def _run(self, awaitable: Awaitable[T]) -> T:
        raise NotImplementedError

    def _iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self._run(events.__anext__())
            except StopAsyncIteration:
                return


def blocking(
    coroutine: Callable[Concatenate[Any, P], Awaitable[T]],
) -> Callable[Concatenate[BlockingCaller, P], T]:
    """The blocking method for one coroutine of the async client: same parameters, same answer."""
    name = coroutine.__name__

    @functools.wraps(coroutine)
    def method(self: BlockingCaller, /, *args: P.args, **kwargs: P.kwargs) -> T:
        awaitable: Awaitable[T] = getattr(self._client, name)(*args, **kwargs)
        return self._run(awaitable)

    return method
