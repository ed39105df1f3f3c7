"""Backfill with dry run: slots by the DST rule, existing runs flagged, missing ones recorded once
per slot (also under two concurrent calls), capped, and decided through the normal pipeline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg

from routines_dispatcher.worker import Dispatcher
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, decided, dispatcher

__all__ = ["api_settings", "dispatcher"]

# Amsterdam springs forward on 2026-03-29: 02:00 local does not exist that night.
WINDOW: dict[str, Any] = {"from": "2026-03-27T00:00:00Z", "to": "2026-03-30T12:00:00Z"}
SLOTS = ["2026-03-27T01:00:00Z", "2026-03-28T01:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]


async def _scheduled(
    client: Client, world: World, cron: str, timezone: str, **routine: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A routine of tenant A with one schedule trigger: (routine, trigger)."""
    r = await make_routine(client, world.a, **routine)
    t = await api_client.make_trigger(
        client, world.a, r["id"], {"kind": "schedule", "cronExpression": cron, "timezone": timezone}
    )
    return r, t


async def _nightly(client: Client, world: World, **routine: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A routine scheduled at 02:00 Amsterdam time (see WINDOW): (routine, trigger)."""
    return await _scheduled(client, world, "0 2 * * *", "Europe/Amsterdam", **routine)


async def _backfill(client: Client, token: str, routine_id: str, status: int = 200, **body: Any) -> Any:
    return await call(client, "POST", f"/api/routines/{routine_id}/backfill", token, body, status)


async def _slot_runs(db: asyncpg.Connection, trigger_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT scheduled_for, source, count(*) OVER (PARTITION BY scheduled_for) AS n"
        " FROM routine_runs WHERE trigger_id = $1::uuid ORDER BY scheduled_for",
        trigger_id,
    )


async def test_dry_run_lists_slots_with_the_dst_rule_and_records_nothing(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r, t = await _nightly(client, world)
    earlier = await db.fetchval(
        "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, scheduled_for)"
        " VALUES ($1::uuid, $2::uuid, $3::uuid, 'schedule', $4) RETURNING id",
        r["id"],
        world.a.company_id,
        t["id"],
        datetime(2026, 3, 28, 1, 0, tzinfo=UTC),
    )
    got = await _backfill(client, world.a.agent_key, r["id"], triggerId=t["id"], **WINDOW)
    assert got["dryRun"] is True
    assert [s["scheduledFor"] for s in got["slots"]] == SLOTS
    # The fixed-time job inside the spring-forward gap fires once, right after the gap.
    assert [s["local"] for s in got["slots"]][2] == "2026-03-29T03:00:00+02:00"
    assert [s["existingRunId"] for s in got["slots"]] == [None, str(earlier), None, None]
    assert (got["missing"], got["recorded"], got["capped"]) == (3, 0, 0)
    assert {s["recordedRunId"] for s in got["slots"]} == {None}
    assert len(await _slot_runs(db, t["id"])) == 1


async def test_backfill_records_missing_slots_once_capped_and_through_the_policy(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher
) -> None:
    r, t = await _nightly(client, world, concurrencyPolicy="coalesce_if_active")
    first = await _backfill(
        client, world.a.board, r["id"], triggerId=t["id"], dryRun=False, maxRuns=3, **WINDOW
    )
    assert (first["missing"], first["recorded"], first["capped"]) == (4, 3, 1)
    recorded = [s["recordedRunId"] for s in first["slots"]]
    assert recorded[3] is None and None not in recorded[:3]  # oldest first
    second = await _backfill(client, world.a.board, r["id"], triggerId=t["id"], dryRun=False, **WINDOW)
    assert (second["missing"], second["recorded"], second["capped"]) == (1, 1, 0)
    third = await _backfill(client, world.a.board, r["id"], triggerId=t["id"], dryRun=False, **WINDOW)
    assert (third["missing"], third["recorded"]) == (0, 0)
    assert [s["existingRunId"] for s in third["slots"]] == [
        *recorded[:3],
        second["slots"][3]["recordedRunId"],
    ]
    rows = await _slot_runs(db, t["id"])
    assert [(r_["source"], r_["n"]) for r_ in rows] == [("backfill", 1)] * 4
    statuses = [
        (await decided(db, run_id))["status"]
        for run_id in [*recorded[:3], second["slots"][3]["recordedRunId"]]
    ]
    assert sorted(statuses) == ["coalesced", "coalesced", "coalesced", "issue_created"]
    run = await call(client, "GET", f"/api/runs/{recorded[0]}", world.a.board, status=200)
    assert (run["source"], run["scheduledFor"], run["triggerId"]) == ("backfill", SLOTS[0], t["id"])


async def test_two_concurrent_backfills_record_each_slot_once(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r, t = await _scheduled(client, world, "*/15 * * * *", "UTC")
    window: dict[str, Any] = {"from": "2026-05-01T00:00:00Z", "to": "2026-05-01T05:00:00Z"}  # 21 slots
    answers = await asyncio.gather(
        *(
            _backfill(client, token, r["id"], triggerId=t["id"], dryRun=False, maxRuns=100, **window)
            for token in (world.a.board, world.a.agent_key, world.a.board)
        )
    )
    rows = await _slot_runs(db, t["id"])
    assert len(rows) == 21 and {row["n"] for row in rows} == {1}
    assert sum(a["recorded"] for a in answers) == 21
    mine = [s["recordedRunId"] for a in answers for s in a["slots"] if s["recordedRunId"]]
    assert len(mine) == len(set(mine)) == 21


async def test_backfill_input_errors_and_rights(client: Client, world: World) -> None:
    r, t = await _nightly(client, world)
    other, other_t = await _nightly(client, world)
    hook = await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
    ok = {"triggerId": t["id"], **WINDOW}
    for body, status in (
        ({**ok, "maxRuns": 101}, 422),  # over the hard limit (default 100)
        ({**ok, "maxRuns": 0}, 400),
        ({**ok, "to": "2999-01-01T00:00:00Z"}, 422),
        ({**ok, "from": "2026-04-01T00:00:00Z"}, 422),
        ({**ok, "from": "2026-03-27T00:00:00"}, 422),
        ({**ok, "from": "1900-01-01T00:00:00Z"}, 422),
        ({**ok, "triggerId": hook["id"]}, 422),
        ({**ok, "triggerId": other_t["id"]}, 422),
        ({**ok, "from": "2020-01-01T00:00:00Z"}, 422),  # more than 1,000 slots
        ({"triggerId": t["id"]}, 400),
        ({**ok, "extra": 1}, 400),
    ):
        got = await _backfill(client, world.a.board, r["id"], status, **body)
        assert set(got) == {"error", "details"}, body
    await _backfill(client, world.a.other_agent_key, r["id"], 403, **ok)
    await _backfill(client, world.b.board, r["id"], 404, **ok)
    await api_client.patch_routine(client, world.a, other["id"], {"status": "archived"})
    await _backfill(client, world.a.board, other["id"], 200, triggerId=other_t["id"], **WINDOW)
    await _backfill(client, world.a.board, other["id"], 409, triggerId=other_t["id"], dryRun=False, **WINDOW)
