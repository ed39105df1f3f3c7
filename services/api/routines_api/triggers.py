"""Trigger management: schedule, webhook and api triggers, secret rotation."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from routines_api.auth import QUERIES, Principal, authenticate, load_routine, path_uuid
from routines_api.common import Row, dump, parse_body, respond
from routines_api.feature_queries import FEATURE_QUERIES
from routines_api.models import (
    RotatedSecret,
    RotateSecret,
    TriggerCreate,
    TriggerOut,
    TriggerUpdate,
    TriggerWithSecret,
)
from routines_api.openapi import ROUTES
from routines_api.quotas import enforce_quota, lock_company
from routines_api.routine_features import record_trigger_activity, require_schedule_fillable
from routines_api.state import API_SETTINGS_KEY, SECRET_BOX_KEY
from shared.bus import Bus, Subjects
from shared.cron import describe, parse_cron, zone
from shared.crypto import new_public_id, new_webhook_secret
from shared.errors import BadRequest, NotFound, RateLimited, Unprocessable
from shared.http import BUS_KEY, DB_KEY
from shared.rules import next_run_at

ROTATION_WINDOW_SEC = 60

SCHEDULE_FIELDS = {"cron_expression", "timezone"}
WEBHOOK_FIELDS = {"signing_mode", "replay_window_sec"}


def validate_schedule(cron: str | None, tz: str | None) -> None:
    """Parse both or raise 422 with the parser's reason."""
    if cron is None:
        raise Unprocessable("cronExpression is required for schedule triggers")
    parse_cron(cron)
    zone(tz or "UTC")


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


async def announce_trigger_change(bus: Bus, **ids: str | None) -> None:
    """Gateways drop cached trigger state on this (secrets, enabled, routine status)."""
    await bus.publish_quietly(Subjects.TRIGGERS_CHANGED, {k: v for k, v in ids.items() if v})


async def _load_trigger_for_manage(
    conn: asyncpg.Connection, principal: Principal, trigger_id: uuid.UUID
) -> asyncpg.Record:
    trigger = await conn.fetchrow(QUERIES["trigger_by_id"], trigger_id)
    if trigger is None:
        raise NotFound("trigger not found")
    principal.require_visible(trigger["company_id"], "trigger")
    principal.require_manage_routine(trigger["assignee_agent_id"])
    # Serialise with routine status changes.
    await conn.fetchrow(QUERIES["routine_for_update"], trigger["routine_id"])
    return trigger


@ROUTES.route(
    "POST",
    "/api/routines/{routineId}/triggers",
    summary="Add a trigger (webhook secret shown once)",
    tag="triggers",
    body=TriggerCreate,
    response=TriggerWithSecret,
    status=201,
    errors=(403, 404, 422),
)
async def create_trigger(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    routine_id = path_uuid(request, "routineId", "routine")
    body = await parse_body(request, TriggerCreate)
    given = body.model_fields_set
    if body.kind != "schedule" and given & SCHEDULE_FIELDS:
        raise BadRequest(f"{body.kind} triggers take no cronExpression or timezone")
    if body.kind != "webhook" and given & WEBHOOK_FIELDS:
        raise BadRequest(f"{body.kind} triggers take no signingMode or replayWindowSec")
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
            tz = body.timezone or "UTC"
            validate_schedule(body.cron_expression, tz)
            cron = parse_cron(body.cron_expression or "").expression
        elif body.kind == "webhook":
            public_id, signing_mode = new_public_id(), body.signing_mode or "bearer"
            replay_window = body.replay_window_sec or 300
            secret = new_webhook_secret()
        now = await conn.fetchval(QUERIES["transaction_now"])
        row = await conn.fetchrow(
            QUERIES["insert_trigger"],
            trigger_id,
            routine_id,
            routine["company_id"],
            body.kind,
            body.label,
            body.enabled,
            cron,
            tz,
            next_run_at(body.kind, body.enabled, routine["status"], cron, tz, now),
            public_id,
            signing_mode,
            replay_window,
        )
        if secret is not None:
            await conn.execute(
                QUERIES["insert_secret"],
                trigger_id,
                request.app[SECRET_BOX_KEY].encrypt(secret, str(trigger_id)),
            )
        assert row is not None
        await record_trigger_activity(conn, principal, row, "trigger_added")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=public_id)
    return respond(trigger_json(request, row, secret), 201)


@ROUTES.route(
    "PATCH",
    "/api/routine-triggers/{triggerId}",
    summary="Update a trigger",
    tag="triggers",
    body=TriggerUpdate,
    response=TriggerOut,
    errors=(403, 404, 422),
)
async def update_trigger(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    body = await parse_body(request, TriggerUpdate)
    async with request.app[DB_KEY].transaction() as conn:
        t = await _load_trigger_for_manage(conn, principal, trigger_id)
        given = body.model_fields_set
        if body.kind is not None and body.kind != t["kind"]:
            raise BadRequest("a trigger's kind cannot change; delete it and add a new one")
        if t["kind"] != "schedule" and given & SCHEDULE_FIELDS:
            raise BadRequest(f"{t['kind']} triggers take no cronExpression or timezone")
        if t["kind"] != "webhook" and given & WEBHOOK_FIELDS:
            raise BadRequest(f"{t['kind']} triggers take no signingMode or replayWindowSec")
        for name in ("enabled", "cron_expression", "timezone", "signing_mode", "replay_window_sec"):
            if name in given and getattr(body, name) is None:
                raise BadRequest(f"{name} cannot be null")
        label = body.label if "label" in given else t["label"]
        enabled = body.enabled if body.enabled is not None else t["enabled"]
        cron = body.cron_expression or t["cron_expression"]
        tz = body.timezone or t["timezone"]
        next_at = t["next_run_at"]
        if t["kind"] == "schedule":
            validate_schedule(cron, tz)
            cron = parse_cron(cron).expression
            schedule_changed = (cron, tz) != (t["cron_expression"], t["timezone"])
            if schedule_changed or enabled != t["enabled"]:
                # Recomputed from now: a resumed trigger does not burst with the slots it missed.
                now = await conn.fetchval(QUERIES["transaction_now"])
                next_at = next_run_at("schedule", enabled, t["routine_status"], cron, tz, now)
        row = await conn.fetchrow(
            QUERIES["update_trigger"],
            trigger_id,
            label,
            enabled,
            cron,
            tz,
            next_at,
            body.signing_mode or t["signing_mode"],
            body.replay_window_sec or t["replay_window_sec"],
        )
        assert row is not None
        await record_trigger_activity(conn, principal, row, "trigger_updated")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=row["public_id"])
    return respond(trigger_json(request, row))


@ROUTES.route(
    "DELETE",
    "/api/routine-triggers/{triggerId}",
    summary="Delete a trigger (its runs are kept)",
    tag="triggers",
    status=204,
    errors=(403, 404),
)
async def delete_trigger(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    async with request.app[DB_KEY].transaction() as conn:
        t = await _load_trigger_for_manage(conn, principal, trigger_id)
        await conn.execute(QUERIES["delete_trigger"], trigger_id)
        await record_trigger_activity(conn, principal, t, "trigger_deleted")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=t["public_id"])
    return web.Response(status=204)


@ROUTES.route(
    "POST",
    "/api/routine-triggers/{triggerId}/rotate-secret",
    summary="Rotate a webhook secret (new secret shown once)",
    tag="triggers",
    body=RotateSecret,
    response=RotatedSecret,
    errors=(403, 404, 422, 429),
)
async def rotate_secret(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    trigger_id = path_uuid(request, "triggerId", "trigger")
    body = await parse_body(request, RotateSecret)
    secret = new_webhook_secret()
    async with request.app[DB_KEY].transaction() as conn:
        t = await _load_trigger_for_manage(conn, principal, trigger_id)
        if t["kind"] != "webhook":
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
        await conn.execute(QUERIES["expire_secrets"], trigger_id, until)
        await conn.execute(QUERIES["delete_expired_secrets"], trigger_id)
        await conn.execute(
            QUERIES["insert_secret"], trigger_id, request.app[SECRET_BOX_KEY].encrypt(secret, str(trigger_id))
        )
        await conn.execute(FEATURE_QUERIES["set_last_rotated_at"], trigger_id)
        await record_trigger_activity(conn, principal, t, "secret_rotated")
    await announce_trigger_change(request.app[BUS_KEY], triggerId=str(trigger_id), publicId=t["public_id"])
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
