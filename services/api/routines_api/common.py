"""Helpers the API handlers share: body and query parsing, serialisation."""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from shared.errors import BadRequest
from shared.http import json_response, read_json

M = TypeVar("M", bound=BaseModel)
Row = Mapping[str, Any] | asyncpg.Record


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated by `model`, strictly: no coercion ("300" is not 300, "false" and 0
    are not false); unknown fields and bad values → 400 with details. `read_json` first applies the
    edge rules (size, depth, finite numbers, unique keys); pydantic then validates the same bytes
    in JSON mode, where UUIDs and timestamps are strings by nature."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    raw = await request.read()  # cached by aiohttp: the bytes read_json parsed
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}", strict=True)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": _message(model, err)}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise BadRequest("invalid request body", details) from None


def _message(model: type[BaseModel], err: Any) -> str:
    """pydantic's message; for an unknown top-level field, the known field it most resembles."""
    if err["type"] != "extra_forbidden" or len(err["loc"]) != 1:
        return str(err["msg"])
    known = [info.alias or name for name, info in model.model_fields.items()]
    suggestion = suggest_field(str(err["loc"][0]), known)
    if suggestion is None:
        return f"unknown field; known fields: {', '.join(known)}"
    return f"unknown field; did you mean {suggestion}?"


def suggest_field(unknown: str, known: list[str]) -> str | None:
    """The known field an unknown one was most likely meant to be (snake_case, prefix, typo)."""
    if to_camel(unknown) in known:
        return to_camel(unknown)
    lowered = {k.lower(): k for k in known}
    prefixed = [k for k in known if k.lower().startswith(unknown.lower())]
    if unknown.lower() in lowered:
        return lowered[unknown.lower()]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(unknown.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


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


class RawJson(str):
    """JSON text as Postgres stored it, answered verbatim: never decoded and re-validated, so no
    stored value (however deep or large it got in) can make a read fail."""


# Columns the queries answer as JSON text; validated as placeholders, then spliced in as stored.
_STORED_JSON: dict[str, Any] = {"payload": {}, "coalesced_fires": []}
_SPLICE = re.compile(r'"\\u0000(\d+)\\u0000"')


def dump(model: type[BaseModel], row: Row, **extra: Any) -> dict[str, Any]:
    """A database row (plus extras) as the model's camelCase JSON."""
    data = {**dict(row), **extra}
    stored = {k: RawJson(data[k]) for k in _STORED_JSON if isinstance(data.get(k), str)}
    data.update({k: _STORED_JSON[k] for k in stored})
    out = model.model_validate(data).model_dump(mode="json", by_alias=True)
    out.update({to_camel(k): v for k, v in stored.items()})
    return out


def _swap_raw(value: Any, fragments: list[str]) -> Any:
    if isinstance(value, RawJson):
        fragments.append(value)
        # NUL cannot occur in any text Postgres stores, so the marker cannot collide with data.
        return f"\x00{len(fragments) - 1}\x00"
    if isinstance(value, dict):
        return {k: _swap_raw(v, fragments) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_raw(v, fragments) for v in value]
    return value


def respond(data: Any, status: int = 200) -> web.Response:
    """A JSON answer; `RawJson` values are emitted as the JSON text they hold."""
    fragments: list[str] = []
    swapped = _swap_raw(data, fragments)
    if not fragments:
        return json_response(data, status)
    text = _SPLICE.sub(lambda m: fragments[int(m.group(1))], json.dumps(swapped, default=str))
    return web.Response(text=text, status=status, content_type="application/json")
