"""The API's writes: each wide INSERT/UPDATE once, named by what it records, so a handler reads as
parse → authorize → store call → answer. Checks happen before these are called; every function
runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from routines_api.answers import Row
from routines_api.auth import Principal
from routines_api.sql import QUERIES
from shared.crypto import SecretBox, hash_token
from shared.templates import Variable

# The core columns of a routine, in the order insert_routine and update_routine take them.
ROUTINE_COLUMNS = (
    "title",
    "description",
    "assignee_agent_id",
    "project_id",
    "goal_id",
    "parent_issue_id",
    "priority",
    "status",
    "concurrency_policy",
    "catch_up_policy",
)
# A trigger's columns in the order insert_trigger takes them, and those update_trigger sets.
TRIGGER_COLUMNS = (
    "routine_id",
    "company_id",
    "kind",
    "label",
    "enabled",
    "cron_expression",
    "timezone",
    "next_run_at",
    "public_id",
    "signing_mode",
    "replay_window_sec",
)
TRIGGER_SETTABLE = (
    "label",
    "enabled",
    "cron_expression",
    "timezone",
    "next_run_at",
    "signing_mode",
    "replay_window_sec",
)
ISSUE_COLUMNS = (
    "title",
    "description",
    "status",
    "priority",
    "project_id",
    "goal_id",
    "parent_issue_id",
    "assignee_agent_id",
)


async def _one(conn: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    """The row a write answers (it always answers one)."""
    row = await conn.fetchrow(QUERIES[query], *args)
    assert row is not None
    return row


def actor(principal: Principal) -> tuple[str, uuid.UUID | None]:
    """Who acted, as recorded in revisions and the activity log."""
    return principal.kind, principal.agent_id if principal.kind == "agent" else principal.token_id


# The columns each wide write takes after its key ($1: the owner's or the object's id), in order.
COLUMNS = {
    "insert_routine": ROUTINE_COLUMNS,
    "update_routine": ROUTINE_COLUMNS,
    "insert_trigger": TRIGGER_COLUMNS,
    "update_trigger": TRIGGER_SETTABLE,
    "insert_issue": ISSUE_COLUMNS,
}


async def write(
    conn: asyncpg.Connection, query: str, key: uuid.UUID, values: Mapping[str, Any]
) -> asyncpg.Record:
    """One wide INSERT/UPDATE of COLUMNS (insert_routine, update_routine, insert_trigger,
    update_trigger, insert_issue): `key`, then `values` by column name; the row it answers."""
    return await _one(conn, query, key, *(values[c] for c in COLUMNS[query]))


# --- routines ------------------------------------------------------------------------------


async def set_routine_features(
    conn: asyncpg.Connection, routine_id: uuid.UUID, variables: list[Variable], values: Mapping[str, Any]
) -> asyncpg.Record:
    """The declared variables and schedule-health settings (`values` by column name)."""
    declared = [v.to_json() for v in variables]
    thresholds = (values[c] for c in ("failure_alert_after", "auto_pause_after", "stale_after_sec"))
    stale_action = values["stale_action"] or "report"
    return await _one(conn, "set_routine_features", routine_id, declared, *thresholds, stale_action)


async def insert_revision(
    conn: asyncpg.Connection,
    principal: Principal,
    routine: Row,
    snapshot: Mapping[str, Any],
    changes: Mapping[str, Any],
    restored_from: uuid.UUID | None,
) -> asyncpg.Record:
    kind, actor_id = actor(principal)
    return await _one(
        conn,
        "insert_revision",
        routine["id"],
        routine["company_id"],
        kind,
        actor_id,
        dict(snapshot),
        dict(changes),
        restored_from,
    )


async def record_activity(
    conn: asyncpg.Connection,
    principal: Principal | None,
    routine: Row,
    action: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """One entry of the routine's activity log (no principal: the system acted)."""
    kind, actor_id = actor(principal) if principal is not None else ("system", None)
    await conn.execute(
        QUERIES["insert_activity"],
        routine["company_id"],
        routine["id"],
        kind,
        actor_id,
        action,
        dict(details or {}),
    )


async def record_trigger_activity(
    conn: asyncpg.Connection, principal: Principal, trigger: Row, action: str
) -> None:
    """A trigger change in its routine's activity log (never its secret)."""
    routine = {"id": trigger["routine_id"], "company_id": trigger["company_id"]}
    details = {"triggerId": str(trigger["id"]), "kind": trigger["kind"], "label": trigger["label"]}
    await record_activity(conn, principal, routine, action, details)


# --- runs ----------------------------------------------------------------------------------


async def store_given_variables(
    conn: asyncpg.Connection, run_id: uuid.UUID, values: Mapping[str, Any]
) -> None:
    if values:
        await conn.execute(QUERIES["set_run_input_variables"], run_id, dict(values))


async def store_run_overrides(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    assignee_agent_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
) -> None:
    if assignee_agent_id is not None or project_id is not None:
        await conn.execute(QUERIES["set_run_overrides"], run_id, assignee_agent_id, project_id)


async def insert_replay_run(
    conn: asyncpg.Connection, routine: Row, original: Row, payload: Any, variables: Any
) -> asyncpg.Record:
    """A new run of `original`'s trigger (source `replay`, `replayOf` the original)."""
    return await _one(
        conn,
        "insert_replay_run",
        routine["id"],
        routine["company_id"],
        original["trigger_id"],
        payload,
        original["id"],
        variables,
    )


# --- triggers ------------------------------------------------------------------------------


async def add_secret(conn: asyncpg.Connection, box: SecretBox, trigger_id: uuid.UUID, secret: str) -> None:
    """A webhook secret of the trigger, encrypted (bound to the trigger's id)."""
    await conn.execute(QUERIES["insert_secret"], trigger_id, box.encrypt(secret, str(trigger_id)))


async def rotate_secret(
    conn: asyncpg.Connection, box: SecretBox, trigger_id: uuid.UUID, secret: str, old_valid_until: datetime
) -> None:
    """The trigger's current secrets expire at `old_valid_until` (expired ones go); `secret` is added."""
    await conn.execute(QUERIES["expire_secrets"], trigger_id, old_valid_until)
    await conn.execute(QUERIES["delete_expired_secrets"], trigger_id)
    await add_secret(conn, box, trigger_id, secret)
    await conn.execute(QUERIES["set_last_rotated_at"], trigger_id)


# --- directory -----------------------------------------------------------------------------


async def insert_agent_key(conn: asyncpg.Connection, agent_id: uuid.UUID, name: str, api_key: str) -> None:
    """An API key of the agent (stored hashed)."""
    await conn.execute(QUERIES["insert_token"], hash_token(api_key), "agent", agent_id, None, name)


async def insert_board_token(
    conn: asyncpg.Connection, company_id: uuid.UUID, name: str, token: str
) -> uuid.UUID:
    """A board membership of the company and its token (stored hashed); the token's id."""
    member = await _one(conn, "insert_board_membership", company_id, name)
    token_id: uuid.UUID = await conn.fetchval(
        QUERIES["insert_token"], hash_token(token), "board", None, member["id"], name
    )
    return token_id
