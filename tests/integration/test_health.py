"""Schedule health, failure alerts (N failures → one alert; recovery → one event), auto-pause with
a reason, and stale execution issues — against real Postgres, NATS and a real dispatcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.msg import Msg

from routines_dispatcher.worker import Dispatcher
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, decided, dispatcher, get_json
from tests.support import Stack, wait_until

__all__ = ["api_settings", "dispatcher"]


class Events:
    """Everything published on routines.alerts and the agents' wake-ups."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.wakeups: list[dict[str, Any]] = []

    async def on_alert(self, msg: Msg) -> None:
        self.alerts.append(json.loads(msg.data))

    async def on_wakeup(self, msg: Msg) -> None:
        self.wakeups.append(json.loads(msg.data))

    def kinds(self) -> list[str]:
        return [a["kind"] for a in self.alerts]


@pytest.fixture
async def events(stack: Stack) -> AsyncIterator[Events]:
    nc = await nats.connect(stack.nats_url)
    got = Events()
    await nc.subscribe("routines.alerts", cb=got.on_alert)
    await nc.subscribe("agents.*.wakeup", cb=got.on_wakeup)
    await nc.flush()
    yield got
    await nc.drain()


async def _run_decided(
    client: Client, world: World, db: asyncpg.Connection, routine_id: str
) -> dict[str, Any]:
    """Run tenant A's routine by hand and wait for the dispatcher's decision: the run's row."""
    run = await api_client.run_routine(client, world.a, routine_id, {})
    return await decided(db, run["id"])


async def _run_and_settle(
    client: Client, world: World, db: asyncpg.Connection, routine_id: str, status: str
) -> str:
    row = await _run_decided(client, world, db, routine_id)
    assert row["status"] == "issue_created"
    await call(
        client, "PATCH", f"/api/issues/{row['linked_issue_id']}", world.a.agent_key, {"status": status}, 200
    )
    return str(row["id"])


async def _health(client: Client, world: World, routine_id: str, query: str = "") -> Any:
    """The routine's health, as tenant A's board sees it."""
    health, _ = await get_json(client, f"/api/routines/{routine_id}/health{query}", world.a.board)
    return health


async def _stale_first_issue(
    client: Client, world: World, db: asyncpg.Connection, **routine_fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A skip_if_active routine whose issues go stale after 60 s, and its first run, decided, whose
    issue is backdated two minutes: (routine, first run's row)."""
    r = await make_routine(
        client, world.a, concurrencyPolicy="skip_if_active", staleAfterSec=60, **routine_fields
    )
    first = await _run_decided(client, world, db, r["id"])
    await db.execute(
        "UPDATE issues SET created_at = created_at - interval '2 minutes' WHERE id = $1",
        first["linked_issue_id"],
    )
    return r, first


async def test_n_failures_give_one_alert_and_a_success_one_recovery(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher, events: Events
) -> None:
    r = await make_routine(client, world.a, concurrencyPolicy="always_enqueue", failureAlertAfter=3)
    for _ in range(2):
        await _run_and_settle(client, world, db, r["id"], "cancelled")
    health = await _health(client, world, r["id"])
    assert (health["failureStreak"], health["alerting"]) == (2, False)
    await _run_and_settle(client, world, db, r["id"], "cancelled")
    await wait_until(lambda: asyncio.sleep(0, events.alerts))
    await _run_and_settle(client, world, db, r["id"], "cancelled")  # a 4th failure: no second alert
    health = await _health(client, world, r["id"])
    assert (health["failureStreak"], health["alerting"]) == (4, True)
    done = await _run_and_settle(client, world, db, r["id"], "done")
    await wait_until(lambda: asyncio.sleep(0, len(events.alerts) == 2))
    await asyncio.sleep(0.3)  # nothing more arrives
    assert events.kinds() == ["routine_failing", "routine_recovered"]
    failing, recovered = events.alerts
    assert (failing["routineId"], failing["consecutiveFailures"]) == (r["id"], 3)
    assert failing["lastFailureReason"] == "execution issue cancelled"
    assert recovered["runId"] == done
    assert [w for w in events.wakeups if w.get("reason") == "routine_failing"] == [
        {"routineId": r["id"], "reason": "routine_failing", "alert": "routine_failing"}
    ]
    health = await _health(client, world, r["id"])
    assert (health["failureStreak"], health["alerting"]) == (0, False)


async def test_dispatcher_failures_alert_and_auto_pause_with_a_reason(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher, events: Events
) -> None:
    r = await make_routine(
        client,
        world.a,
        title="Fix {{ticket}}",
        variables=[{"name": "ticket", "type": "text", "required": True}],
        failureAlertAfter=2,
        autoPauseAfter=2,
    )
    for _ in range(2):
        assert (await _run_decided(client, world, db, r["id"]))["status"] == "failed"
    await wait_until(lambda: asyncio.sleep(0, len(events.alerts) == 2))
    assert sorted(events.kinds()) == ["routine_auto_paused", "routine_failing"]
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert detail["status"] == "paused"
    assert detail["pausedReason"] == "auto-paused after 2 consecutive failed runs"
    revisions = await call(client, "GET", f"/api/routines/{r['id']}/revisions", world.a.board, status=200)
    assert (revisions[0]["actorKind"], revisions[0]["changes"]) == (
        "system",
        {"status": {"from": "active", "to": "paused"}},
    )
    assert revisions[0]["id"] == detail["revisionId"] and revisions[0]["snapshot"]["status"] == "paused"
    resumed = await api_client.patch_routine(client, world.a, r["id"], {"status": "active"})
    assert resumed["pausedReason"] is None


async def test_stale_issue_is_cancelled_so_skip_if_active_fires_again(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher, events: Events
) -> None:
    r, first = await _stale_first_issue(client, world, db, staleAction="cancel", failureAlertAfter=1)
    health = await _health(client, world, r["id"])
    assert health["openIssue"]["stale"] is True and health["openIssue"]["ageSec"] >= 120
    second = await _run_decided(client, world, db, r["id"])
    assert second["status"] == "issue_created"
    old = await db.fetchrow("SELECT status FROM issues WHERE id = $1", first["linked_issue_id"])
    assert old["status"] == "cancelled"
    row = await db.fetchrow("SELECT status, failure_reason FROM routine_runs WHERE id = $1", first["id"])
    assert row["status"] == "failed" and "staleAfterSec" in row["failure_reason"]
    # The cancelled run is a failure like any other: it counts toward the failure alert.
    await wait_until(lambda: asyncio.sleep(0, events.alerts))
    assert [(a["kind"], a["lastFailureReason"]) for a in events.alerts] == [
        ("routine_failing", row["failure_reason"])
    ]


async def test_stale_issue_only_reported_by_default(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher
) -> None:
    r, _first = await _stale_first_issue(client, world, db)
    second = await _run_decided(client, world, db, r["id"])
    assert second["status"] == "skipped"
    health = await _health(client, world, r["id"])
    assert (health["openIssue"]["stale"], health["staleAction"]) == (True, "report")


async def test_health_counts_slots_runs_lag_and_drops(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r = await make_routine(client, world.a)
    t = await api_client.make_trigger(
        client,
        world.a,
        r["id"],
        {"kind": "schedule", "cronExpression": "*/10 * * * *", "timezone": "UTC", "label": "ten"},
    )
    now = await db.fetchval("SELECT now()")
    created = now - timedelta(hours=2)
    await db.execute("UPDATE routine_triggers SET created_at = $2 WHERE id = $1::uuid", t["id"], created)
    slots = []
    at = created.replace(second=0, microsecond=0) - timedelta(minutes=created.minute % 10)
    while at <= now:
        if at > created:
            slots.append(at)
        at += timedelta(minutes=10)
    assert len(slots) >= 11

    async def add(source: str, slot: Any, lag_sec: float, **extra: Any) -> None:
        await db.execute(
            "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, status, scheduled_for,"
            " triggered_at, payload) VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6, $7, $8)",
            r["id"],
            world.a.company_id,
            t["id"],
            source,
            extra.get("status", "issue_created"),
            slot,
            (slot or now) + timedelta(seconds=lag_sec),
            extra.get("payload", {}),
        )

    for slot in slots[:4]:
        await add("schedule", slot, 2)
    await add("schedule", slots[4], 300, status="failed")
    await add("backfill", slots[5], 3600)
    await add("schedule", None, -1, status="skipped", payload={"missedSlots": {"count": 3}})
    health = await _health(client, world, r["id"], "?days=1")
    (trig,) = health["triggers"]
    assert (trig["triggerId"], trig["label"], trig["expectedSlots"], trig["expectedSlotsAtLeast"]) == (
        t["id"],
        "ten",
        len(slots),
        False,
    )
    assert (trig["onTime"], trig["late"], trig["backfilled"], trig["missedSkipped"]) == (4, 1, 1, 3)
    assert trig["unaccounted"] == len(slots) - 9
    assert trig["lagSeconds"]["p50"] == 2.0 and trig["lagSeconds"]["max"] == 300.0
    assert health["runsByStatus"] == {"issue_created": 5, "failed": 1, "skipped": 1}
    assert health["failureStreak"] == 1 and health["openIssue"] is None
    for bad in ("0", "91", "x"):
        await get_json(client, f"/api/routines/{r['id']}/health?days={bad}", world.a.board, 400)
    await get_json(client, f"/api/routines/{r['id']}/health", world.b.board, 404)


async def test_health_settings_are_validated(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    for body in (
        {"failureAlertAfter": 0},
        {"autoPauseAfter": 1001},
        {"staleAfterSec": 10},
        {"staleAction": "close"},
    ):
        await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, body, 400)
    got = await api_client.patch_routine(
        client, world.a, r["id"], {"failureAlertAfter": 2, "staleAfterSec": 600}
    )
    assert (got["failureAlertAfter"], got["staleAfterSec"], got["staleAction"]) == (2, 600, "report")
    got = await api_client.patch_routine(client, world.a, r["id"], {"failureAlertAfter": None})
    assert (got["failureAlertAfter"], got["staleAfterSec"]) == (None, 600)


async def test_an_undecidable_run_counts_toward_the_failure_alert(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher, events: Events
) -> None:
    """A run the dispatcher cannot decide (here: its issue insert is refused) fails with the reason,
    and that failure raises the routine's alert like any other."""
    r = await make_routine(client, world.a, failureAlertAfter=1)
    await db.execute(
        "CREATE FUNCTION refuse_issues() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.origin_id = '{r['id']}' THEN RAISE EXCEPTION 'refused issue'; END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER refuse_issues BEFORE INSERT ON issues FOR EACH ROW EXECUTE FUNCTION refuse_issues()"
    )
    row = await _run_decided(client, world, db, r["id"])
    assert row["status"] == "failed" and "refused issue" in row["failure_reason"]
    await wait_until(lambda: asyncio.sleep(0, events.alerts))
    assert [(a["kind"], a["routineId"]) for a in events.alerts] == [("routine_failing", r["id"])]


async def test_health_bounds_the_slots_it_counts(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Minute schedules over 90 days: counting stops at 10,000 slots per call, across triggers."""
    r = await make_routine(client, world.a)
    for _ in range(2):
        await api_client.make_trigger(
            client, world.a, r["id"], {"kind": "schedule", "cronExpression": "* * * * *"}
        )
    await db.execute(
        "UPDATE routine_triggers SET created_at = now() - interval '100 days' WHERE routine_id = $1::uuid",
        r["id"],
    )
    health = await _health(client, world, r["id"], "?days=90")
    counted = [(t["expectedSlots"], t["expectedSlotsAtLeast"]) for t in health["triggers"]]
    assert counted == [(10_000, True), (0, True)]


async def test_dropped_slots_from_before_the_window_are_not_counted_in_it(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """A catch-up audit run written inside the window can cover slots from long before it: its
    whole count was reported (2,885 dropped slots in a window of 2,016, in the audit)."""
    r = await make_routine(client, world.a)
    t = await api_client.make_trigger(
        client,
        world.a,
        r["id"],
        {"kind": "schedule", "cronExpression": "0 * * * *", "timezone": "UTC", "label": "hourly"},
    )
    now = await db.fetchval("SELECT date_trunc('hour', now()) + interval '30 minutes'")
    await db.execute(
        "UPDATE routine_triggers SET created_at = $2 WHERE id = $1::uuid", t["id"], now - timedelta(days=10)
    )
    first, last = now - timedelta(days=10, minutes=30), now - timedelta(days=1, minutes=30)  # on the hour
    await db.execute(
        "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, status, triggered_at, payload)"
        " VALUES ($1::uuid, $2::uuid, $3::uuid, 'schedule', 'skipped', $4, $5)",
        r["id"],
        world.a.company_id,
        t["id"],
        last + timedelta(minutes=1),
        {"missedSlots": {"count": 217, "from": first.isoformat(), "to": last.isoformat()}},
    )
    (trig,) = (await _health(client, world, r["id"], "?days=7"))["triggers"]
    # The window's slots up to the last dropped one: six days of hours, less the half hour.
    assert trig["missedSkipped"] == 6 * 24
    assert trig["missedSkipped"] <= trig["expectedSlots"]
