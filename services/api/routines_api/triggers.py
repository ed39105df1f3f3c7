"""Trigger management: schedule, webhook and api triggers, secret rotation."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from aiohttp import web

from routines_api import store
from routines_api.answers import dump, respond, trigger_json
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import load_routine, load_trigger_for_manage
from routines_api.events import announce_trigger_change
from routines_api.inputs import parse_body
from routines_api.models import (
    RotatedSecret,
    RotateSecret,
    TriggerCreate,
    TriggerOut,
    TriggerUpdate,
    TriggerWithSecret,
)
from routines_api.patches import check_fields_fit_kind, normalized_schedule, patched_trigger
from routines_api.quotas import enforce_quota, lock_company
from routines_api.routes import ROUTES
from routines_api.routine_features import require_schedule_fillable
from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY, SECRET_BOX_KEY
from shared.crypto import new_public_id, new_webhook_secret
from shared.errors import RateLimited, Unprocessable
from shared.http import BUS_KEY, DB_KEY
from shared.rules import next_run_at

TRIGGERS = ROUTES.tagged("triggers")

ROTATION_WINDOW_SEC = 60


@TRIGGERS.create("/api/routines/{routineId}/triggers", TriggerCreate, TriggerWithSecret)
async def create_trigger(request: web.Request) -> web.Response:
    """Add a trigger (webhook secret shown once).

    Adds a schedule, webhook or api trigger to a routine. A webhook trigger's secret is in this answer only;
    its `webhookUrl` points at the webhook gateway.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    body = await parse_body(request, TriggerCreate)
    check_fields_fit_kind(body.kind, body.model_fields_set)
    trigger_id = uuid.uuid4()
    secret: str | None = None
    async with request.app[DB_KEY].transaction() as conn:
        routine = await load_routine(conn, principal, routine_id, lock=True, manage=True)
        settings = request.app[API_SETTINGS_KEY]
        await enforce_quota(settings, conn, "triggers_per_routine", routine_id)
        if body.kind == "webhook":
            await lock_company(conn, routine["company_id"])
            await enforce_quota(settings, conn, "webhook_triggers_per_company", routine["company_id"])
        cron = tz = public_id = signing_mode = None
        replay_window = None
        if body.kind == "schedule":
            require_schedule_fillable(routine)
            cron, tz = normalized_schedule(body.cron_expression, body.timezone)
        elif body.kind == "webhook":
            public_id, signing_mode = new_public_id(), body.signing_mode or "bearer"
            replay_window = body.replay_window_sec or 300
            secret = new_webhook_secret()
        now = await conn.fetchval(QUERIES["transaction_now"])
        row = await store.write(
            conn,
            "insert_trigger",
            trigger_id,
            {
                "routine_id": routine_id,
                "company_id": routine["company_id"],
                "kind": body.kind,
                "label": body.label,
                "enabled": body.enabled,
                "cron_expression": cron,
                "timezone": tz,
                "next_run_at": next_run_at(body.kind, body.enabled, routine["status"], cron, tz, now),
                "public_id": public_id,
                "signing_mode": signing_mode,
                "replay_window_sec": replay_window,
            },
        )
        if secret is not None:
            await store.add_secret(conn, request.app[SECRET_BOX_KEY], trigger_id, secret)
        await store.record_trigger_activity(conn, principal, row, "trigger_added")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=public_id)
    return respond(trigger_json(request, row, secret), 201)


@TRIGGERS.patch(
    "/api/routine-triggers/{triggerId}", body=TriggerUpdate, response=TriggerOut, errors=(403, 404, 422)
)
async def update_trigger(request: web.Request) -> web.Response:
    """Update a trigger.

    Changes a trigger; a new cron expression or time zone recomputes `nextRunAt`.
    """
    principal = principal_of(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    body = await parse_body(request, TriggerUpdate)
    async with request.app[DB_KEY].transaction() as conn:
        trigger = await load_trigger_for_manage(conn, principal, trigger_id)
        now = await conn.fetchval(QUERIES["transaction_now"])
        row = await store.write(conn, "update_trigger", trigger_id, patched_trigger(trigger, body, now))
        await store.record_trigger_activity(conn, principal, row, "trigger_updated")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=row["public_id"])
    return respond(trigger_json(request, row))


@TRIGGERS.delete("/api/routine-triggers/{triggerId}", status=204, errors=(403, 404))
async def delete_trigger(request: web.Request) -> web.Response:
    """Delete a trigger (its runs are kept).

    Deletes a trigger. Its runs stay in the routine's history.
    """
    principal = principal_of(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    async with request.app[DB_KEY].transaction() as conn:
        trigger = await load_trigger_for_manage(conn, principal, trigger_id)
        await conn.execute(QUERIES["delete_trigger"], trigger_id)
        await store.record_trigger_activity(conn, principal, trigger, "trigger_deleted")
    await announce_trigger_change(
        request.app[BUS_KEY], triggerId=str(trigger_id), publicId=trigger["public_id"]
    )
    return web.Response(status=204)


@TRIGGERS.post(
    "/api/routine-triggers/{triggerId}/rotate-secret",
    body=RotateSecret,
    response=RotatedSecret,
    errors=(403, 404, 422, 429),
)
async def rotate_secret(request: web.Request) -> web.Response:
    """Rotate a webhook secret (new secret shown once).

    Issues a new webhook secret; the old one stays valid for `graceSec` seconds.
    """
    principal = principal_of(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    body = await parse_body(request, RotateSecret)
    secret = new_webhook_secret()
    async with request.app[DB_KEY].transaction() as conn:
        trigger = await load_trigger_for_manage(conn, principal, trigger_id)
        if trigger["kind"] != "webhook":
            raise Unprocessable("only webhook triggers have a secret to rotate")
        # Rotations of one trigger are serialised by the routine lock taken above.
        limit = request.app[API_SETTINGS_KEY].secret_rotations_per_min
        recent = await conn.fetchrow(QUERIES["count_rotation"], trigger_id, ROTATION_WINDOW_SEC, limit)
        assert recent is not None  # the trigger row is there: it was just loaded
        if recent["n"] >= limit:
            raise RateLimited(
                max(1, recent["retry_after"] or 1),
                f"too many secret rotations: at most {limit} per webhook per minute",
            )
        now: datetime = await conn.fetchval(QUERIES["transaction_now"])
        until = now + timedelta(seconds=body.grace_sec)
        await store.rotate_secret(conn, request.app[SECRET_BOX_KEY], trigger_id, secret, until)
        await store.record_trigger_activity(conn, principal, trigger, "secret_rotated")
    await announce_trigger_change(
        request.app[BUS_KEY], triggerId=str(trigger_id), publicId=trigger["public_id"]
    )
    return respond(
        dump(
            RotatedSecret,
            {
                "trigger_id": trigger_id,
                "secret": secret,
                "previous_secret_valid_until": until if body.grace_sec else None,
            },
        )
    )
