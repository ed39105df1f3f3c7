"""The API's route table: every route with the metadata that describes it (the OpenAPI document
is built from it in `openapi.py`), installed with its authentication."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from routines_api.auth import authenticate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""

    @classmethod
    def integer(cls, name: str, maximum: int, default: int, description: str) -> QueryParam:
        """An integer from 1 to `maximum`, `default` when absent (as `inputs.query_int` reads it)."""
        schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
        return cls(name, schema, description)


def page_params(maximum: int) -> tuple[QueryParam, QueryParam]:
    """`limit` and `cursor` of a newest-first list answered a page at a time (`answers.page_answer`)."""
    cursor = QueryParam(
        "cursor",
        {"type": "string", "maxLength": 200},
        "Continue after the page that answered this value in its `X-Next-Cursor` header.",
    )
    return QueryParam.integer("limit", maximum, 50, "Page size."), cursor


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler | None
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_is_list: bool = False
    status: int = 200
    extra_statuses: dict[int, type[BaseModel]] = field(default_factory=dict)
    errors: Sequence[int] = ()
    auth: bool = True
    query: Sequence[QueryParam] = ()
    headers: Sequence[QueryParam] = ()
    server: str | None = None
    stream: str | None = None  # media type of a streamed answer (e.g. text/event-stream)
    description: str = ""

    @property
    def operation_id(self) -> str:
        """camelCase of the handler's name: one convention for every operation."""
        return to_camel(self.handler.__name__) if self.handler is not None else "fireWebhookTrigger"


class RouteTable:
    """Routes with enough metadata to describe themselves."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self, method: str, path: str, *, summary: str, tag: str, **meta: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, summary, tag, **meta))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        """Add every route; those marked `auth=True` authenticate before their handler runs (which
        then takes the caller from `principal_of`), so the flag that documents authentication is
        the thing that enforces it."""
        for op in self.operations:
            if op.handler is not None:
                handler = _authenticated(op.handler) if op.auth else op.handler
                app.router.add_route(op.method, op.path, handler)


def _authenticated(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        await authenticate(request)  # 401 here; the principal is kept on the request
        return await handler(request)

    return checked


ROUTES = RouteTable()
