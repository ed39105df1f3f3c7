"""What a request brings: its JSON body validated by a model, and its query parameters
(UUIDs, choices, limits, instants, page cursors), each refused with a 400 that names it."""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from shared.errors import BadRequest
from shared.http import read_json

M = TypeVar("M", bound=BaseModel)


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


def query_int(request: web.Request, name: str, default: int, maximum: int) -> int:
    """An integer from 1 to `maximum` (absent or empty: `default`), or 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"query parameter {name} must be between 1 and {maximum}")
    return value


def query_limit(request: web.Request, default: int = 50, maximum: int = 500) -> int:
    return query_int(request, "limit", default, maximum)


def query_instant(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 instant from the query (no offset means UTC), or 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    # A literal `+` in a query string arrives as a space.
    text = raw.strip().replace(" ", "+")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not _in_range(moment):
        raise BadRequest(f"query parameter {name} is out of range (years 1970 to 9998)")
    return moment


def _in_range(moment: datetime) -> bool:
    """Between 1970 and 9998 in UTC — also for instants whose offset takes them past year 1 or
    9999, which cannot even be converted (OverflowError: a 500 before)."""
    try:
        return 1970 <= moment.astimezone(UTC).year <= 9998
    except OverflowError:
        return False


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The sort key a cursor names, or 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, run_id = json.loads(raw)
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None or not _in_range(moment):
            raise ValueError("naive or out of range")
        return moment, uuid.UUID(run_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise BadRequest("query parameter cursor is not a cursor this API handed out") from None


def query_cursor(request: web.Request) -> tuple[datetime, uuid.UUID] | tuple[None, None]:
    """The sort key of the last item of the previous page (`cursor`), or (None, None) for the first."""
    raw = request.query.get("cursor") or None
    return decode_cursor(raw) if raw else (None, None)
