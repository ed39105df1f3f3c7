"""Wake-ups over HTTP: an agent's `agents.{id}.wakeup` messages as Server-Sent Events.

For agents that cannot reach NATS. The events come from the JetStream events stream, so any
API replica can serve them and a reconnect with `Last-Event-ID` resumes where the agent left
off (for as long as the stream keeps them: a day). Event ids are stream sequence numbers:
increasing, opaque to the agent.
"""

from __future__ import annotations

import contextlib
import json

import nats.errors
import nats.js.errors
from aiohttp import web

from routines_api.auth import principal_of
from routines_api.models import WakeupEvent
from routines_api.routes import ROUTES, QueryParam
from routines_api.state import API_SETTINGS_KEY
from shared.errors import BadRequest, Forbidden, ServiceUnavailable
from shared.http import BUS_KEY
from shared.logging import get_logger

DIRECTORY = ROUTES.tagged("directory")

log = get_logger(__name__)

WAKEUP_EVENT = "wakeup"


def _resume_after(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadRequest("Last-Event-ID must be an event id this endpoint sent (a positive integer)")
    return int(raw)


def sse_event(event_id: int, event: str, data: object) -> bytes:
    """One Server-Sent Event frame."""
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {body}\n\n".encode()


@DIRECTORY.get(
    "/api/agents/me/wakeups",
    errors=(400, 403),
    stream="text/event-stream",
    events=WakeupEvent,
    query=(
        QueryParam(
            "lastEventId",
            {"type": "string"},
            "resume after this event id (same as the Last-Event-ID header)",
        ),
    ),
)
async def agent_wakeups(request: web.Request) -> web.StreamResponse:
    """Follow the calling agent's wake-ups as Server-Sent Events.

    Server-Sent Events: one `wakeup` event (`{issueId, runId, runIds, routineId, reason}`;
    `issueIds` on issue_created) with an id per wake-up of the calling agent (agent keys only);
    `: ping` comments keep proxies from closing an idle stream.
    Reconnect with `Last-Event-ID` to resume.
    """
    principal = principal_of(request)
    if principal.agent_id is None:
        raise Forbidden("wake-ups are for agent tokens")
    after = _resume_after(request)
    bus = request.app[BUS_KEY]
    if not bus.is_connected:
        raise ServiceUnavailable("wake-ups are unavailable while NATS is unreachable; retry shortly")
    try:
        subscription = await bus.subscribe_agent_wakeups(str(principal.agent_id), after)
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
        raise ServiceUnavailable("wake-ups are unavailable right now; retry shortly") from exc
    heartbeat = request.app[API_SETTINGS_KEY].sse_heartbeat_sec
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: connected\n\n")
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=heartbeat)
            except (TimeoutError, nats.errors.TimeoutError):
                await response.write(b": ping\n\n")
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue  # not ours to forward
            await response.write(sse_event(msg.metadata.sequence.stream, WAKEUP_EVENT, data))
    except ConnectionResetError:  # the client closed the stream: how every stream ends, not a 500
        return response
    finally:  # the client went away (or we are shutting down): drop the ephemeral consumer
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
