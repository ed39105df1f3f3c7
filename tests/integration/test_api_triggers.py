"""The API's triggers against real Postgres and NATS: schedule and webhook triggers, their secrets,
enabling, disabling and deleting them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests.integration import api_client
from tests.integration.api_client import Client, World, call
from tests.support import Stack, wait_until

WEEKLY = {
    "kind": "schedule",
    "cronExpression": "0 9 * * 1",
    "timezone": "Europe/Amsterdam",
    "label": "weekly",
}


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs wait briefly for their decision here."""
    return {"manual_run_wait_sec": 0.2}


async def _secret_rows(db: asyncpg.Connection, trigger: dict[str, Any]) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM webhook_secrets WHERE trigger_id = $1", uuid.UUID(trigger["id"])
    )
    return count


async def test_a_schedule_trigger_keeps_its_timezone_and_has_a_next_run(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    assert t["nextRunAt"] is not None
    assert t["timezone"] == "Europe/Amsterdam"


async def test_a_schedule_trigger_defaults_to_utc(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    utc_default = await api_client.make_trigger(
        client, world.a, routine["id"], {"kind": "schedule", "cronExpression": "*/5 * * * *"}
    )
    assert utc_default["timezone"] == "UTC"


async def test_an_invalid_cron_field_is_422_naming_it(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    bad = await api_client.make_trigger(
        client, world.a, routine["id"], {"kind": "schedule", "cronExpression": "61 * * * *"}, 422
    )
    assert "minute" in bad["error"] or "invalid" in bad["error"]


@pytest.mark.parametrize(
    ("fields", "status"),
    [({"timezone": "Mars/Olympus"}, 422), ({"label": "x" * 121}, 400)],
    ids=["unknown-timezone", "long-label"],
)
async def test_invalid_schedule_triggers_are_refused(
    client: Client, world: World, routine: dict[str, Any], fields: dict[str, Any], status: int
) -> None:
    await api_client.make_trigger(
        client, world.a, routine["id"], {"kind": "schedule", "cronExpression": "0 9 * * *", **fields}, status
    )


async def test_disabling_parks_a_schedule_trigger_and_enabling_computes_its_next_run(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    off = await api_client.patch_trigger(client, world.a, t["id"], {"enabled": False})
    assert off["nextRunAt"] is None
    on = await api_client.patch_trigger(client, world.a, t["id"], {"enabled": True})
    assert on["nextRunAt"] is not None


async def test_a_triggers_kind_cannot_be_changed(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    await api_client.patch_trigger(client, world.a, t["id"], {"kind": "webhook"}, 400)


async def test_editing_the_cron_expression_moves_the_next_run(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    edited = await api_client.patch_trigger(client, world.a, t["id"], {"cronExpression": "0 10 * * 1"})
    assert edited["nextRunAt"] != t["nextRunAt"]


async def test_pausing_parks_every_schedule_trigger_and_resuming_recomputes_from_now(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    """No burst of missed slots after a resume."""
    await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    await api_client.make_trigger(
        client, world.a, routine["id"], {"kind": "schedule", "cronExpression": "*/5 * * * *"}
    )
    await api_client.patch_routine(client, world.a, routine["id"], {"status": "paused"})
    detail = await api_client.routine_detail(client, world.a, routine["id"])
    assert all(x["nextRunAt"] is None for x in detail["triggers"])
    await db.execute("UPDATE routine_triggers SET next_run_at = NULL")
    await api_client.patch_routine(client, world.a, routine["id"], {"status": "active"})
    detail = await api_client.routine_detail(client, world.a, routine["id"])
    now = await db.fetchval("SELECT now()")
    for x in detail["triggers"]:
        assert x["nextRunAt"] is not None
    assert await db.fetchval("SELECT count(*) FROM routine_triggers WHERE next_run_at < $1", now) == 0


async def test_a_webhook_trigger_is_bearer_signed_with_a_public_url_and_a_secret(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "webhook"})
    assert t["signingMode"] == "bearer"
    assert t["replayWindowSec"] == 300
    assert len(t["publicId"]) == 24
    assert t["webhookUrl"] == f"https://hooks.example.test/api/routine-triggers/public/{t['publicId']}/fire"
    assert len(t["secret"]) > 40


async def test_a_webhook_secret_is_shown_once_and_stored_encrypted(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    secret = (await api_client.make_trigger(client, world.a, routine["id"], {"kind": "webhook"}))["secret"]
    detail = await api_client.routine_detail(client, world.a, routine["id"])
    assert "secret" not in detail["triggers"][0]
    dumped = await db.fetchval("SELECT string_agg(encode(ciphertext, 'escape'), '') FROM webhook_secrets")
    assert secret not in dumped
    assert secret.encode() not in b"".join(
        r["ciphertext"] for r in await db.fetch("SELECT ciphertext FROM webhook_secrets")
    )


@pytest.mark.parametrize(
    "fields",
    [{"replayWindowSec": 29}, {"replayWindowSec": 86401}, {"signingMode": "md5"}],
    ids=["short-window", "long-window", "unknown-signing-mode"],
)
async def test_invalid_webhook_triggers_are_400(
    client: Client, world: World, routine: dict[str, Any], fields: dict[str, Any]
) -> None:
    await api_client.make_trigger(client, world.a, routine["id"], {"kind": "webhook", **fields}, 400)


async def test_rotating_a_secret_without_grace_replaces_it(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "webhook"})
    rotated = await call(
        client, "POST", f"/api/routine-triggers/{t['id']}/rotate-secret", world.a.board, {}, 200
    )
    assert rotated["secret"] != t["secret"]
    assert rotated["previousSecretValidUntil"] is None
    assert await _secret_rows(db, t) == 1


async def test_rotating_a_secret_with_grace_keeps_the_previous_one_until_a_time(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "webhook"})
    rotate = f"/api/routine-triggers/{t['id']}/rotate-secret"
    await call(client, "POST", rotate, world.a.board, {}, 200)
    graced = await call(client, "POST", rotate, world.a.board, {"graceSec": 60}, 200)
    assert graced["previousSecretValidUntil"] is not None
    assert await _secret_rows(db, t) == 2
    await call(client, "POST", rotate, world.a.board, {"graceSec": 86401}, 400)


async def test_only_webhook_triggers_have_a_secret_to_rotate(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    api_trigger = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "api"})
    await call(
        client, "POST", f"/api/routine-triggers/{api_trigger['id']}/rotate-secret", world.a.board, {}, 422
    )


async def test_deleting_a_trigger_keeps_its_runs(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "api"})
    run = await api_client.run_routine(client, world.a, routine["id"], {"triggerId": t["id"]})
    assert run["triggerId"] == t["id"]
    await call(client, "DELETE", f"/api/routine-triggers/{t['id']}", world.a.board, status=204)
    runs = await api_client.routine_runs(client, world.a, routine["id"])
    assert [(x["id"], x["triggerId"]) for x in runs] == [(run["id"], None)]
    await call(client, "DELETE", f"/api/routine-triggers/{t['id']}", world.a.board, status=404)


@pytest.mark.parametrize("how", ["pause and resume the routine", "disable and enable the trigger"])
async def test_resuming_recomputes_next_run_from_now_not_from_the_past(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any], how: str
) -> None:
    """A trigger that last ran (and was due) a day ago is paused for real and resumed: its next
    run is the next minute after *now*, not a slot from the past (which would burst catch-up)."""
    r = routine
    t = await api_client.make_trigger(
        client, world.a, r["id"], {"kind": "schedule", "cronExpression": "* * * * *", "timezone": "UTC"}
    )
    await db.execute(
        "UPDATE routine_triggers SET next_run_at = now() - interval '1 day',"
        " last_fired_at = now() - interval '1 day' - interval '1 minute' WHERE id = $1",
        uuid.UUID(t["id"]),
    )
    off: tuple[str, dict[str, object]]
    on: tuple[str, dict[str, object]]
    if how.startswith("pause"):
        off, on = (
            (f"/api/routines/{r['id']}", {"status": "paused"}),
            (f"/api/routines/{r['id']}", {"status": "active"}),
        )
    else:
        path = f"/api/routine-triggers/{t['id']}"
        off, on = (path, {"enabled": False}), (path, {"enabled": True})
    await call(client, "PATCH", off[0], world.a.board, off[1], 200)
    assert (
        await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", uuid.UUID(t["id"]))
        is None
    )
    before = await db.fetchval("SELECT now()")
    await call(client, "PATCH", on[0], world.a.board, on[1], 200)
    after = await db.fetchval("SELECT now()")
    next_at = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", uuid.UUID(t["id"]))
    assert before < next_at <= after + timedelta(minutes=1)
    assert next_at.second == 0 and next_at.microsecond == 0


@pytest.mark.parametrize("routine_becomes", ["active", "paused"])
async def test_a_trigger_edit_waiting_on_a_status_change_builds_on_that_change(
    client: Client,
    world: World,
    routine: dict[str, Any],
    db: asyncpg.Connection,
    stack: Stack,
    routine_becomes: str,
) -> None:
    """A trigger PATCH read the trigger (and its routine's status) before taking the routine's
    lock, then wrote what it had read back: edited while the routine was being resumed, an enabled
    trigger was left with no next fire — silently off for good (the audit saw it in 66 of 100
    tries); edited while the routine was being paused, it stayed scheduled. Here the status change
    holds the routine's lock until the edit is seen waiting for it, then commits."""
    starts_as = "paused" if routine_becomes == "active" else "active"
    if starts_as == "paused":
        await api_client.patch_routine(client, world.a, routine["id"], {"status": "paused"})
    trigger = await api_client.make_trigger(
        client, world.a, routine["id"], {**WEEKLY, "cronExpression": "* * * * *"}
    )
    routine_id, trigger_id = uuid.UUID(routine["id"]), uuid.UUID(trigger["id"])
    changer = await asyncpg.connect(stack.database_url)
    try:
        async with changer.transaction():
            await changer.execute("SELECT 1 FROM routines WHERE id = $1 FOR NO KEY UPDATE", routine_id)
            edit = asyncio.create_task(
                api_client.patch_trigger(client, world.a, trigger["id"], {"label": "renamed"})
            )
            await wait_until(
                lambda: db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%FROM routines%FOR NO KEY UPDATE%'"
                )
            )
            # What PATCH /api/routines/{id} does to the routine and its triggers.
            await changer.execute(
                "UPDATE routines SET status = $2 WHERE id = $1", routine_id, routine_becomes
            )
            await changer.execute(
                "UPDATE routine_triggers SET next_run_at = CASE WHEN $2 = 'active'"
                " THEN date_trunc('minute', now()) + interval '1 minute' END WHERE routine_id = $1",
                routine_id,
                routine_becomes,
            )
        edited = await edit
    finally:
        await changer.close()
    stored = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", trigger_id)
    assert edited["label"] == "renamed"
    assert (stored is not None) == (routine_becomes == "active"), stored
    assert (edited["nextRunAt"] is not None) == (routine_becomes == "active")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timezone": ""}, "unknown time zone ''"),
        ({"cronExpression": ""}, "cron expression is empty"),
    ],
)
async def test_an_empty_zone_or_expression_is_refused_not_ignored(
    client: Client, world: World, routine: dict[str, Any], change: dict[str, str], message: str
) -> None:
    """`"timezone": ""` on create silently became UTC, and an empty expression or zone in a PATCH
    was taken as "unchanged" (200) — while preview refused the same empty zone with 422."""
    refused = await api_client.make_trigger(client, world.a, routine["id"], {**WEEKLY, **change}, status=422)
    assert message in refused["error"]
    trigger = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    patched = await api_client.patch_trigger(client, world.a, trigger["id"], change, status=422)
    assert message in patched["error"]


async def test_an_agents_trigger_edit_waiting_on_a_reassignment_is_refused(
    client: Client, world: World, routine: dict[str, Any], db: asyncpg.Connection, stack: Stack
) -> None:
    """The agent's right to manage the routine was checked on the row read before the lock: a
    board reassigning the routine meanwhile did not stop the (former) assignee's edit."""
    assert routine["assigneeAgentId"] == world.a.agent_id
    trigger = await api_client.make_trigger(client, world.a, routine["id"], WEEKLY)
    changer = await asyncpg.connect(stack.database_url)
    try:
        async with changer.transaction():
            await changer.execute(
                "SELECT 1 FROM routines WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(routine["id"])
            )
            edit = asyncio.create_task(
                call(
                    client,
                    "PATCH",
                    f"/api/routine-triggers/{trigger['id']}",
                    world.a.agent_key,
                    {"label": "x"},
                    403,
                )
            )
            await wait_until(
                lambda: db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%FROM routines%FOR NO KEY UPDATE%'"
                )
            )
            await changer.execute(
                "UPDATE routines SET assignee_agent_id = $2 WHERE id = $1",
                uuid.UUID(routine["id"]),
                uuid.UUID(world.a.other_agent_id),
            )
        refused = await edit
    finally:
        await changer.close()
    assert "error" in refused
    assert (
        await db.fetchval("SELECT label FROM routine_triggers WHERE id = $1", uuid.UUID(trigger["id"]))
        == "weekly"
    )
