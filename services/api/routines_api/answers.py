"""What the API answers: rows as the models' camelCase JSON (stored JSON spliced in verbatim),
and pages of a newest-first list with the cursor of the next one."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from routines_api.models import TriggerOut, TriggerWithSecret
from routines_api.state import API_SETTINGS_KEY
from shared.cron import describe
from shared.errors import Unprocessable
from shared.http import json_response

Row = Mapping[str, Any] | asyncpg.Record
NEXT_CURSOR_HEADER = "X-Next-Cursor"


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


def encode_cursor(at: datetime, item_id: uuid.UUID) -> str:
    """An opaque cursor naming the last item of a page (its sort key: instant, id)."""
    raw = json.dumps([at.astimezone(UTC).isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_answer(rows: Sequence[Row], limit: int, model: type[BaseModel], at: str) -> web.Response:
    """A page of `limit` rows (the query fetched one more), with `X-Next-Cursor` naming its last
    row's sort key (`at`, id) while another page follows."""
    page = rows[:limit]
    response = respond([dump(model, row) for row in page])
    if len(rows) > limit:
        response.headers[NEXT_CURSOR_HEADER] = encode_cursor(page[-1][at], page[-1]["id"])
    return response


def trigger_json(request: web.Request, row: Row, secret: str | None = None) -> dict[str, Any]:
    base = request.app[API_SETTINGS_KEY]
    extra: dict[str, Any] = {}
    if row["kind"] == "webhook":
        extra["webhook_url"] = (
            f"{base.public_gateway_url.rstrip('/')}/api/routine-triggers/public/{row['public_id']}/fire"
        )
    if row["kind"] == "schedule" and row["cron_expression"] and row["timezone"]:
        try:
            extra["description"] = describe(row["cron_expression"], row["timezone"])
        except Unprocessable:  # stored before today's grammar (e.g. a reversed range): still listable
            extra["description"] = None
    if secret is not None:
        return dump(TriggerWithSecret, row, secret=secret, **extra)
    return dump(TriggerOut, row, **extra)
