"""Helpers the API handlers share: body and query parsing, serialisation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import BadRequest
from shared.http import json_response, read_json

M = TypeVar("M", bound=BaseModel)
Row = Mapping[str, Any] | asyncpg.Record


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated by `model`; unknown fields and bad values → 400 with details."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise BadRequest("invalid request body", details) from None


def query_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be a UUID") from None


def query_choice(request: web.Request, name: str, allowed: Iterable[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    options = list(allowed)
    if raw not in options:
        raise BadRequest(f"query parameter {name} must be one of {', '.join(options)}")
    return raw


def query_limit(request: web.Request, default: int = 50, maximum: int = 500) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("query parameter limit must be an integer") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"query parameter limit must be between 1 and {maximum}")
    return value


def dump(model: type[BaseModel], row: Row, **extra: Any) -> dict[str, Any]:
    """A database row (plus extras) as the model's camelCase JSON."""
    return model.model_validate({**dict(row), **extra}).model_dump(mode="json", by_alias=True)


def respond(data: Any, status: int = 200) -> web.Response:
    return json_response(data, status)
