"""The fire simulator over the API: merged next fires, outcomes under the policy, the company
calendar, and the real scheduler firing exactly the predicted slots."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from routines_scheduler.ticker import Scheduler
from shared.cron import next_fire
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, get_json

__all__ = ["api_settings"]


async def _schedule(
    client: Client, world: World, routine_id: str, cron: str, tz: str, **extra: object
) -> dict[str, Any]:
    body = {"kind": "schedule", "cronExpression": cron, "timezone": tz, **extra}
    created: dict[str, Any] = await call(
        client, "POST", f"/api/routines/{routine_id}/triggers", world.a.board, body, 201
    )
    return created


async def _open_issue(db: asyncpg.Connection, world: World, routine_id: str) -> None:
    await db.execute(
        "INSERT INTO issues (company_id, title, status, origin_kind, origin_id)"
        " VALUES ($1::uuid, 'open', 'in_progress', 'routine_execution', $2::uuid)",
        world.a.company_id,
        routine_id,
    )


async def test_next_fires_merged_across_triggers(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    ams = await _schedule(client, world, r["id"], "0 9 * * *", "Europe/Amsterdam", label="mornings")
    utc = await _schedule(client, world, r["id"], "30 */6 * * *", "UTC")
    off = await _schedule(client, world, r["id"], "* * * * *", "UTC", enabled=False)
    await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
    body, _ = await get_json(client, f"/api/routines/{r['id']}/upcoming?count=12", world.a.agent_key)
    fires = body["fires"]
    assert len(fires) == 12 and body["truncated"] is True
    assert off["id"] not in {f["triggerId"] for f in fires}
    # Each trigger's fires are its chain from its nextRunAt; merged in time order.
    expected = []
    for t in (ams, utc):
        at = datetime.fromisoformat(t["nextRunAt"])
        for _ in range(12):
            expected.append((at, t["id"]))
            at = next_fire(t["cronExpression"], t["timezone"], at)
    expected.sort()
    assert [(datetime.fromisoformat(f["utc"]), f["triggerId"]) for f in fires] == expected[:12]
    morning = next(f for f in fires if f["triggerId"] == ams["id"])
    assert morning["label"] == "mornings"
    assert morning["local"][11:19] == "09:00:00"
    local = datetime.fromisoformat(morning["local"])
    assert morning["dst"] == (local.utcoffset() == timedelta(hours=2))
    assert {f["predictedOutcome"] for f in fires} == {"issue_created"}
    with_disabled, _ = await get_json(
        client, f"/api/routines/{r['id']}/upcoming?count=100&includeDisabled=true", world.a.board
    )
    assert {f["predictedOutcome"] for f in with_disabled["fires"] if f["triggerId"] == off["id"]} == {
        "disabled"
    }
    default, _ = await get_json(client, f"/api/routines/{r['id']}/upcoming", world.a.board)
    assert len(default["fires"]) == 10


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [("coalesce_if_active", "coalesced"), ("skip_if_active", "skipped"), ("always_enqueue", "issue_created")],
)
async def test_predicted_outcome_follows_the_policy_and_the_open_issue(
    client: Client, world: World, db: asyncpg.Connection, policy: str, outcome: str
) -> None:
    r = await make_routine(client, world.a, concurrencyPolicy=policy)
    await _schedule(client, world, r["id"], "*/5 * * * *", "UTC")
    path = f"/api/routines/{r['id']}/upcoming?count=3"
    assert {f["predictedOutcome"] for f in (await get_json(client, path, world.a.board))[0]["fires"]} == {
        "issue_created"
    }
    await _open_issue(db, world, r["id"])
    assert {f["predictedOutcome"] for f in (await get_json(client, path, world.a.board))[0]["fires"]} == {
        outcome
    }
    await api_client.patch_routine(client, world.a, r["id"], {"status": "paused"})
    assert {f["predictedOutcome"] for f in (await get_json(client, path, world.a.board))[0]["fires"]} == {
        "paused"
    }


async def test_upcoming_input_errors_and_tenancy(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    for bad in ("count=0", "count=101", "count=x", "includeDisabled=yes"):
        await get_json(client, f"/api/routines/{r['id']}/upcoming?{bad}", world.a.board, 400)
    await get_json(client, f"/api/routines/{r['id']}/upcoming", world.b.board, 404)
    empty, _ = await get_json(client, f"/api/routines/{r['id']}/upcoming", world.a.board)
    assert empty == {"fires": [], "truncated": False}


async def test_company_calendar_window(client: Client, world: World) -> None:
    mine = await make_routine(client, world.a)
    theirs = await make_routine(client, world.a, assigneeAgentId=world.a.other_agent_id)
    paused = await make_routine(client, world.a, status="paused")
    hourly = await _schedule(client, world, mine["id"], "0 * * * *", "UTC")
    daily = await _schedule(client, world, theirs["id"], "15 6 * * *", "America/New_York")
    await _schedule(client, world, paused["id"], "* * * * *", "UTC")
    start = datetime.fromisoformat(hourly["nextRunAt"])
    end = start + timedelta(days=2)
    path = f"/api/companies/{world.a.company_id}/upcoming?from={start.isoformat().replace('+', '%2B')}"
    path += f"&to={end.isoformat().replace('+', '%2B')}"
    body, _ = await get_json(client, path, world.a.agent_key)
    by_trigger: dict[str, int] = {}
    for f in body["fires"]:
        by_trigger[f["triggerId"]] = by_trigger.get(f["triggerId"], 0) + 1
        assert start <= datetime.fromisoformat(f["utc"]) <= end
    assert by_trigger == {hourly["id"]: 49, daily["id"]: 2}
    assert [f["utc"] for f in body["fires"]] == sorted(f["utc"] for f in body["fires"])
    only_mine, _ = await get_json(client, path + f"&assigneeAgentId={world.a.agent_id}", world.a.board)
    assert {f["routineId"] for f in only_mine["fires"]} == {mine["id"]}
    base = f"/api/companies/{world.a.company_id}/upcoming"
    await get_json(client, base + "?from=2026-01-01T00:00:00Z&to=2026-02-02T00:00:00Z", world.a.board, 400)
    await get_json(client, base + "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", world.a.board, 400)
    await get_json(client, base + "?from=soon", world.a.board, 400)
    # Past the range fires are computed in, the calendar was silently empty (or a 422 on cron).
    far, _ = await get_json(client, base + "?from=9998-12-01T00:00:00Z", world.a.board, 400)
    assert far["error"] == "the window must lie between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z"
    await get_json(client, base + "?from=2199-12-30T00:00:00Z", world.a.board, 400)  # ends past 2200
    await get_json(client, base, world.b.board, 403)
    default, _ = await get_json(client, base, world.a.board)  # from now, for 7 days
    hourly_fires = sum(f["triggerId"] == hourly["id"] for f in default["fires"])
    daily_fires = sum(f["triggerId"] == daily["id"] for f in default["fires"])
    assert (hourly_fires in (168, 169), daily_fires) == (True, 7)
    assert len(default["fires"]) == hourly_fires + daily_fires  # the paused routine's trigger is not listed


async def test_the_real_scheduler_fires_the_predicted_slots(
    client: Client, world: World, db: asyncpg.Connection, scheduler: Scheduler
) -> None:
    r = await make_routine(client, world.a)
    t = await _schedule(client, world, r["id"], "* * * * *", "UTC")
    # Make the trigger due now (the slot that began this minute), as if the clock had reached it —
    # not in a minute's last seconds, or the next slot would be due too by the time it ticks.
    second = await db.fetchval("SELECT extract(second FROM clock_timestamp())::float8")
    if second > 55:
        await asyncio.sleep(60.5 - second)
    due = await db.fetchval("SELECT date_trunc('minute', now())")
    await db.execute("UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1::uuid", t["id"], due)
    body, _ = await get_json(client, f"/api/routines/{r['id']}/upcoming?count=2", world.a.board)
    predicted = [datetime.fromisoformat(f["utc"]) for f in body["fires"]]
    assert await scheduler.tick() == 1
    fired = await db.fetchval("SELECT scheduled_for FROM routine_runs WHERE trigger_id = $1::uuid", t["id"])
    following = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1::uuid", t["id"])
    assert predicted == [fired, following]
