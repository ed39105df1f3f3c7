"""Recording runs (step 1 of the pipeline) and their JSON shape; shared by API, gateway, scheduler."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.bus import Bus, Subjects, request_context
from shared.errors import Unprocessable
from shared.sql import QUERIES

RUNS_PER_MESSAGE = 100
"""The most runs one `routines.runs.requested` message names (`{"runIds": [...]}`)."""


@dataclass(frozen=True)
class RecordedRun:
    """A run row and whether this call created it (False: an earlier run with the same key)."""

    row: Mapping[str, Any]
    created: bool


async def record_run(
    conn: asyncpg.Connection,
    *,
    routine_id: uuid.UUID,
    company_id: uuid.UUID,
    trigger_id: uuid.UUID | None,
    source: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
    delivery_key: str | None = None,
    scheduled_for: datetime | None = None,
) -> RecordedRun:
    """Insert a `received` run, or return the existing one its idempotency/delivery key names.

    An idempotency key reused with a different payload → Unprocessable (422)."""
    scope = idempotency_scope(source, trigger_id) if idempotency_key is not None else None
    row = await conn.fetchrow(
        QUERIES["insert_run"],
        routine_id,
        company_id,
        trigger_id,
        source,
        dict(payload),
        idempotency_key,
        delivery_key,
        scheduled_for,
        scope,
    )
    if row is not None:
        return RecordedRun(dict(row), True)
    existing = None
    if idempotency_key is not None:
        found = await conn.fetchrow(
            QUERIES["run_by_idempotency_key"], routine_id, scope, idempotency_key, dict(payload)
        )
        if found is not None and not found["same_payload"]:
            raise Unprocessable(
                "idempotencyKey was already used with a different payload", {"runId": str(found["id"])}
            )
        existing = found
    if existing is None and delivery_key is not None:
        existing = await conn.fetchrow(QUERIES["run_by_delivery_key"], trigger_id, delivery_key)
    if existing is None:
        raise RuntimeError("run insert conflicted but no existing run was found")
    return RecordedRun(dict(existing), False)


def idempotency_scope(source: str, trigger_id: uuid.UUID | None) -> str:
    """Where an idempotency key is unique (with the routine): manual and API runs share one scope;
    each webhook trigger has its own."""
    if source in ("manual", "api"):
        return "manual"
    return f"{source}:{trigger_id}"


async def publish_run_requested(bus: Bus, run_id: uuid.UUID | str, routine_id: uuid.UUID | str) -> bool:
    """Step 2: tell the dispatchers. Failure is fine: the sweeper finds the run in Postgres.

    The stream captures the subject; we do not wait for its PubAck. An ack would only tell us to
    publish again, and the sweeper is what does that — so waiting would cost latency and CPU on
    every fire for nothing.
    """
    return await bus.publish_quietly(
        Subjects.RUNS_REQUESTED,
        {"runId": str(run_id), "routineId": str(routine_id)},
        msg_id=str(run_id),
    )


async def publish_runs_requested(
    bus: Bus,
    runs: Iterable[tuple[uuid.UUID, uuid.UUID]],
    request_ids: Sequence[str | None] | None = None,
) -> None:
    """Step 2 for many runs recorded together (a scheduler claim, a backfill, a gateway's group
    commit), given as (run id, routine id): up to RUNS_PER_MESSAGE of them per message,
    `{"runIds": [...]}` — the dispatcher then fetches, parses and acks one message for a hundred
    runs. `request_ids`: the request that recorded each run; a message's trace header is its
    first run's (default: the caller's). One after the other: a plain publish only appends to
    the connection's buffer."""
    pending = list(runs)
    requests = list(request_ids) if request_ids is not None else [None] * len(pending)
    for start in range(0, len(pending), RUNS_PER_MESSAGE):
        chunk = pending[start : start + RUNS_PER_MESSAGE]
        with request_context(requests[start]):
            if len(chunk) == 1:
                await publish_run_requested(bus, *chunk[0])
                continue
            await bus.publish_quietly(
                Subjects.RUNS_REQUESTED,
                {"runIds": [str(run_id) for run_id, _ in chunk]},
                msg_id=f"{chunk[0][0]}+{len(chunk)}",
            )
