"""The API's route table: every route with the metadata that describes it (the OpenAPI document
is built from it in `openapi.py`), installed with its authentication."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
    def uuid(cls, name: str, description: str = "") -> QueryParam:
        """An id (as `inputs.query_uuid` reads it)."""
        return cls(name, {"type": "string", "format": "uuid"}, description)

    @classmethod
    def choice(cls, name: str, words: Iterable[str], description: str = "") -> QueryParam:
        """One of `words` (as `inputs.query_choice` reads it)."""
        return cls(name, {"type": "string", "enum": list(words)}, description)

    @classmethod
    def instant(cls, name: str, description: str) -> QueryParam:
        """An ISO 8601 instant (as `inputs.query_instant` reads it)."""
        return cls(name, {"type": "string", "format": "date-time"}, description)

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
    events: type[BaseModel] | None = None  # the data of each streamed event
    description: str = ""

    @property
    def operation_id(self) -> str:
        """camelCase of the handler's name: one convention for every operation."""
        return to_camel(self.handler.__name__) if self.handler is not None else "fireWebhookTrigger"


class RouteTable:
    """Routes with enough metadata to describe themselves."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def tagged(self, tag: str) -> Routes:
        """The routes of one tag (an OpenAPI section); each module declares its own."""
        return Routes(self, tag)

    def install(self, app: web.Application) -> None:
        """Add every route; those marked `auth=True` authenticate before their handler runs (which
        then takes the caller from `principal_of`), so the flag that documents authentication is
        the thing that enforces it."""
        for op in self.operations:
            if op.handler is not None:
                handler = _authenticated(op.handler) if op.auth else op.handler
                app.router.add_route(op.method, op.path, handler)


@dataclass(frozen=True)
class Routes:
    """Registers a tag's routes: `@ROUTINES.get("/api/routines/{routineId}", response=RoutineOut)`.

    The handler's docstring is the operation's documentation: its first paragraph the summary (one
    sentence, its final period dropped), the rest the description."""

    table: RouteTable
    tag: str

    def get(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self._add("GET", path, meta)

    def post(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self._add("POST", path, meta)

    def create(
        self, path: str, body: type[BaseModel], response: type[BaseModel], **meta: Any
    ) -> Callable[[Handler], Handler]:
        """POST creating an object under the path's parent: 201 with it; 403 when the caller may not
        create there, 404 for an unknown (or invisible) parent, 422 for a reference that does not
        resolve — unless `errors` says otherwise."""
        meta.setdefault("errors", (403, 404, 422))
        return self._add("POST", path, {"body": body, "response": response, "status": 201, **meta})

    def list(self, path: str, item: type[BaseModel], **meta: Any) -> Callable[[Handler], Handler]:
        """GET of a collection: a JSON array of `item`; 400 for a bad filter or cursor, 403 when the
        caller may not read there, 404 for an unknown (or invisible) parent — unless `errors` says
        otherwise."""
        meta.setdefault("errors", (400, 403, 404))
        return self._add("GET", path, {"response": item, "response_is_list": True, **meta})

    def patch(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self._add("PATCH", path, meta)

    def delete(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self._add("DELETE", path, meta)

    def _add(self, method: str, path: str, meta: dict[str, Any]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            summary, description = handler_docs(handler)
            self.table.operations.append(
                Operation(method, path, handler, summary, self.tag, description=description, **meta)
            )
            return handler

        return register


def handler_docs(handler: Handler) -> tuple[str, str]:
    """A handler's summary and description, from its docstring (see `Routes`)."""
    doc = inspect.getdoc(handler)
    if not doc:
        if sys.flags.optimize >= 2:
            raise RuntimeError("the API documents its operations from docstrings: do not run it with -OO")
        raise TypeError(f"route handler {handler.__name__} has no docstring to document it")
    paragraphs = [" ".join(p.split("\n")) for p in doc.split("\n\n")]
    return paragraphs[0].removesuffix("."), "\n\n".join(paragraphs[1:])


def _authenticated(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        await authenticate(request)  # 401 here; the principal is kept on the request
        return await handler(request)

    return checked


ROUTES = RouteTable()
