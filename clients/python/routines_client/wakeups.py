"""Follow an agent's wake-ups (Server-Sent Events), reconnecting with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from routines_client.errors import error_for
from routines_client.transport import Transport

WAKEUPS_PATH = "/api/agents/me/wakeups"


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE stream into `{"id", "event", "data"}` dicts (comments and pings skipped)."""
    fields: dict[str, str] = {}
    data_lines: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "":
            if data_lines:
                data = "\n".join(data_lines)
                try:
                    parsed: Any = json.loads(data)
                except ValueError:
                    parsed = data
                yield {"id": fields.get("id"), "event": fields.get("event", "message"), "data": parsed}
            fields, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
        elif name in ("id", "event"):
            fields[name] = value


async def follow_wakeups(
    transport: Transport,
    *,
    last_event_id: str | None = None,
    reconnect_delay_sec: float = 1.0,
    max_events: int | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """The calling agent's wake-ups, forever (or `max_events`)."""
    async for event in follow_events(
        transport,
        WAKEUPS_PATH,
        last_event_id=last_event_id,
        reconnect_delay_sec=reconnect_delay_sec,
        max_events=max_events,
    ):
        yield event


async def follow_events(
    transport: Transport,
    path: str,
    *,
    last_event_id: str | None = None,
    reconnect_delay_sec: float = 1.0,
    max_events: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield wake-up events forever (or `max_events`), resuming after the last one seen when the
    connection drops, so none is missed or repeated while the server still retains it."""
    delivered = 0
    while True:
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {transport.token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        try:
            async with session.get(transport.base_url + path, headers=headers) as response:
                if response.status != 200:
                    body = await response.text()
                    try:
                        payload: Any = json.loads(body)
                    except ValueError:
                        payload = body
                    error = error_for(response.status, payload)
                    if response.status not in (502, 503, 504):
                        raise error
                else:
                    async for event in read_events(response):
                        if event["id"] is not None:
                            last_event_id = event["id"]
                        yield event
                        delivered += 1
                        if max_events is not None and delivered >= max_events:
                            return
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
            pass  # reconnect below, resuming after the last event seen
        finally:
            await session.close()
        await asyncio.sleep(reconnect_delay_sec)
