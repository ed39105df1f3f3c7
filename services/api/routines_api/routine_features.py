"""What creating and updating a routine adds for the routine features: declared variables and
their placeholders, the schedule-health settings, a revision per change, and the activity log."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from routines_api import store
from routines_api.answers import Row
from routines_api.auth import Principal
from routines_api.models import RoutineCreate, RoutineFeatureFields, RoutineUpdate, VariableSpec
from routines_api.sql import QUERIES
from shared.errors import Conflict, Unprocessable
from shared.templates import (
    Variable,
    VariableError,
    check_placeholders,
    coerce,
    parse_variables,
    required_without_default,
)

FEATURE_FIELDS = tuple(RoutineFeatureFields.model_fields)
# Fields of a PATCH the core update does not handle.
NOT_CORE_FIELDS = frozenset({*FEATURE_FIELDS, "base_revision_id"})
# Fields of a PATCH that may be set to null (switching a setting off).
NULLABLE_FEATURE_FIELDS = frozenset(
    {"failure_alert_after", "auto_pause_after", "stale_after_sec", "base_revision_id"}
)
# The fields a revision records (camelCase, as the API answers them).
SNAPSHOT_FIELDS = {
    "title": "title",
    "description": "description",
    "assignee_agent_id": "assigneeAgentId",
    "project_id": "projectId",
    "goal_id": "goalId",
    "parent_issue_id": "parentIssueId",
    "priority": "priority",
    "status": "status",
    "concurrency_policy": "concurrencyPolicy",
    "catch_up_policy": "catchUpPolicy",
    "variables": "variables",
    "failure_alert_after": "failureAlertAfter",
    "auto_pause_after": "autoPauseAfter",
    "stale_after_sec": "staleAfterSec",
    "stale_action": "staleAction",
}


def _variables(specs: list[VariableSpec] | None) -> list[Variable]:
    return parse_variables([s.model_dump() for s in specs or []])


def routine_variables(row: Row) -> list[Variable]:
    """The declared variables of a routine row."""
    return [Variable.from_json(v) for v in row["variables"] or []]


def snapshot(row: Row) -> dict[str, Any]:
    """A routine's editable state as JSON."""
    out: dict[str, Any] = {}
    for column, key in SNAPSHOT_FIELDS.items():
        value = row[column]
        out[key] = str(value) if isinstance(value, uuid.UUID) else value
    return out


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Field → {from, to} for every field that differs."""
    return {k: {"from": before.get(k), "to": after[k]} for k in after if before.get(k) != after[k]}


async def record_revision(
    conn: asyncpg.Connection,
    principal: Principal,
    row: Row,
    before: Mapping[str, Any] | None,
    restored_from: uuid.UUID | None = None,
) -> asyncpg.Record | None:
    """A new revision when something changed (always for a new routine)."""
    after = snapshot(row)
    diff = changes(before or {}, after) if before is not None else {}
    if before is not None and not diff:
        return None
    return await store.insert_revision(conn, principal, row, after, diff, restored_from)


async def with_revision(conn: asyncpg.Connection, row: Row) -> dict[str, Any]:
    """The routine row plus its current revision id."""
    latest = await conn.fetchrow(QUERIES["latest_revision"], row["id"])
    return {**dict(row), "revision_id": latest["id"] if latest else None}


def validate_create(body: RoutineCreate) -> list[Variable]:
    """Declared variables of a new routine, its placeholders checked (422 naming the first undeclared)."""
    variables = _variables(body.variables)
    check_placeholders(body.title, body.description, variables)
    return variables


async def after_create(
    conn: asyncpg.Connection, principal: Principal, row: Row, body: RoutineCreate, variables: list[Variable]
) -> dict[str, Any]:
    """Store the feature settings, the first revision and the `created` activity."""
    stored = await store.set_routine_features(conn, row["id"], variables, body.model_dump())
    await record_revision(conn, principal, stored, None)
    await store.record_activity(conn, principal, stored, "created")
    return await with_revision(conn, stored)


async def check_base_revision(conn: asyncpg.Connection, routine_id: uuid.UUID, body: RoutineUpdate) -> None:
    """Optimistic concurrency: 409 when the routine changed since `baseRevisionId`."""
    if body.base_revision_id is None:
        return
    latest = await conn.fetchrow(QUERIES["latest_revision"], routine_id)
    if latest is None or latest["id"] != body.base_revision_id:
        raise Conflict(
            "the routine changed since baseRevisionId; reload it and apply your change again",
            {"currentRevisionId": str(latest["id"]) if latest else None},
        )


async def after_update(
    conn: asyncpg.Connection, principal: Principal, before: Row, row: Row, body: RoutineUpdate
) -> dict[str, Any]:
    """Apply the feature fields of a PATCH; record the revision and the activity."""
    given = body.model_fields_set
    values = {name: getattr(body, name) if name in given else before[name] for name in FEATURE_FIELDS}
    variables = _variables(body.variables) if "variables" in given else routine_variables(before)
    check_placeholders(row["title"], row["description"], variables)
    missing = required_without_default(variables)
    if missing and await conn.fetchval(QUERIES["has_schedule_triggers"], row["id"]):
        raise Unprocessable(
            f"required variable {missing[0]!r} has no default, and schedule fires give no values",
            {"variables": missing},
        )
    stored = await store.set_routine_features(conn, row["id"], variables, values)
    revision = await record_revision(conn, principal, stored, snapshot(before))
    if revision is not None:
        diff = revision["changes"]
        status = diff.get("status", {}).get("to")
        action = {"paused": "paused", "active": "resumed", "archived": "archived"}.get(status, "updated")
        await store.record_activity(conn, principal, stored, action, {"fields": sorted(diff)})
    return await with_revision(conn, stored)


def require_schedule_fillable(routine: Row) -> None:
    """A schedule fire gives no values: 422 while a required variable has no default."""
    missing = required_without_default(routine_variables(routine))
    if missing:
        raise Unprocessable(
            f"required variable {missing[0]!r} has no default; a schedule trigger could never fill it",
            {"variables": missing},
        )


def check_given_variables(routine: Row, given: Mapping[str, Any]) -> dict[str, Any]:
    """Values given for one run: declared names and the right types, or 422 naming the variable."""
    declared = {v.name: v for v in routine_variables(routine)}
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in declared:
            raise Unprocessable(f"variables: {name!r} is not a variable of this routine", {"variable": name})
        if value is None:
            continue
        try:
            values[name] = coerce(declared[name], value)
        except VariableError as exc:
            raise Unprocessable(str(exc), {"variable": name}) from None
    return values


RECENT_RUNS = 5


async def detail_extras(
    conn: asyncpg.Connection, routine_id: uuid.UUID, triggers: list[asyncpg.Record]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the routine detail adds: the open issue, the latest runs, and per trigger its latest
    run's status (`lastResult`) and time (`lastFiredAt` when the scheduler did not stamp one)."""
    issue = await conn.fetchrow(QUERIES["active_issue"], routine_id)
    runs = await conn.fetch(QUERIES["recent_runs"], routine_id, RECENT_RUNS)
    latest = {
        run["trigger_id"]: run
        for run in await conn.fetch(
            QUERIES["latest_run_per_trigger"], [trigger["id"] for trigger in triggers]
        )
    }
    rows = []
    for trigger in triggers:
        last = latest.get(trigger["id"])
        rows.append(
            {
                **dict(trigger),
                "last_result": last["status"] if last else None,
                "last_fired_at": trigger["last_fired_at"] or (last["triggered_at"] if last else None),
            }
        )
    return {"active_issue": dict(issue) if issue else None, "recent_runs": [dict(run) for run in runs]}, rows
