"""Scheduler against real Postgres and NATS: catch-up, replicas, crashes, O(due) claiming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from aiohttp.test_utils import TestClient
from nats.aio.msg import Msg

from routines_scheduler import ticker
from routines_scheduler.sql import QUERIES
from routines_scheduler.ticker import LOCKED_RETRY_SEC, Scheduler
from shared.bus import Subjects
from shared.settings import SchedulerSettings
from tests.factories import make_routine, make_schedule_trigger, make_world
from tests.integration.api_client import api_app, auth, make_tenant, make_trigger
from tests.integration.api_client import make_routine as create_routine
from tests.support import Stack, served, service_connections, start_service, wait_until


@pytest.fixture
async def sleepy_scheduler(stack: Stack) -> AsyncIterator[Scheduler]:
    """A scheduler whose longest sleep (two minutes) is far beyond any test's patience."""
    settings = SchedulerSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, misfire_grace_sec=60, tick_interval_sec=120
    )
    async with service_connections(settings, "test") as (database, bus):
        scheduler = Scheduler(settings, database, bus, asyncio.Event())
        follower = asyncio.create_task(scheduler.follow_trigger_changes())
        await asyncio.wait_for(scheduler.following.wait(), 10)
        loop = asyncio.create_task(scheduler.run())
        yield scheduler
        scheduler.stopping.set()
        await asyncio.wait_for(loop, 10)
        follower.cancel()


# A schedule whose next slot after the one a test sets is months away: nothing else fires meanwhile.
YEARLY = "0 0 1 1 *"


async def _db_now(db: asyncpg.Connection) -> datetime:
    return await db.fetchval("SELECT date_trunc('minute', now())")


async def _runs(db: asyncpg.Connection, trigger: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM routine_runs WHERE trigger_id = $1 ORDER BY scheduled_for NULLS LAST", trigger
    )


async def _scheduled(
    db: asyncpg.Connection, cron: str, next_run_at: datetime | None, **routine_fields: Any
) -> uuid.UUID:
    """A routine of a new company with one schedule trigger (UTC), next due at `next_run_at`:
    the trigger's id."""
    world = await make_world(db)
    routine = await make_routine(db, world, **routine_fields)
    return await make_schedule_trigger(db, world, routine, cron, "UTC", next_run_at)


async def _tick_after_missed_slots(
    db: asyncpg.Connection, scheduler: Scheduler, catch_up_policy: str, missed: int
) -> tuple[datetime, datetime, list[asyncpg.Record]]:
    """One tick over an every-minute trigger with `missed` slots older than the 60 s grace, plus the
    current minute's slot (on time): (the minute now, the first slot, the trigger's runs)."""
    now = await _db_now(db)
    first = now - timedelta(minutes=missed + 1)
    trigger = await _scheduled(db, "* * * * *", first, catch_up_policy=catch_up_policy)
    await scheduler.tick()
    return now, first, await _runs(db, trigger)


async def test_on_time_slot_fires_once_and_trigger_advances(
    db: asyncpg.Connection, scheduler: Scheduler
) -> None:
    now = await _db_now(db)
    trigger = await _scheduled(db, "* * * * *", now)
    assert await scheduler.tick() == 1
    assert await scheduler.tick() == 0
    runs = await _runs(db, trigger)
    assert [(r["status"], r["source"], r["scheduled_for"]) for r in runs] == [("received", "schedule", now)]
    row = await db.fetchrow("SELECT next_run_at, last_fired_at FROM routine_triggers WHERE id = $1", trigger)
    assert row["next_run_at"] > now
    assert row["last_fired_at"] is not None


@pytest.mark.parametrize("missed", [10, 40])
async def test_skip_missed_drops_and_records_one_audit_run(
    db: asyncpg.Connection, scheduler: Scheduler, missed: int
) -> None:
    now, first, runs = await _tick_after_missed_slots(db, scheduler, "skip_missed", missed)
    received = [r for r in runs if r["status"] == "received"]
    audit = [r for r in runs if r["status"] == "skipped"]
    assert len(audit) == 1
    info = audit[0]["payload"]["missedSlots"]
    assert info["from"] == first.isoformat().replace("+00:00", "Z")
    assert info["count"] >= missed
    assert f"{info['count']} missed slot(s)" in audit[0]["failure_reason"]
    assert all(now - r["scheduled_for"] <= timedelta(seconds=60) for r in received)
    assert 1 <= len(received) <= 2


@pytest.mark.parametrize("missed", [10, 40])
async def test_enqueue_missed_with_cap(db: asyncpg.Connection, scheduler: Scheduler, missed: int) -> None:
    _, first, runs = await _tick_after_missed_slots(db, scheduler, "enqueue_missed_with_cap", missed)
    received = [r["scheduled_for"] for r in runs if r["status"] == "received"]
    audit = [r for r in runs if r["status"] == "skipped"]
    # The tick's time: its runs were recorded in one transaction. Slots enumerated independently
    # (every minute from `first`), then split at the 60 s grace as of that time.
    (tick_at,) = {r["triggered_at"] for r in runs if r["status"] == "received"}
    slots = [first + timedelta(minutes=k) for k in range(int((tick_at - first).total_seconds() // 60) + 1)]
    late = [s for s in slots if tick_at - s > timedelta(seconds=60)]
    on_time = [s for s in slots if tick_at - s <= timedelta(seconds=60)]
    assert len(late) >= missed + 1  # first … now-1min are all older than the grace
    assert received == [*late[-25:], *on_time]  # exactly the 25 most recent missed, and the on-time ones
    if missed <= 25:
        assert audit == []
        assert received[0] == first
    else:
        assert len([s for s in received if s in late]) == 25
        assert len(audit) == 1
        assert audit[0]["payload"]["missedSlots"]["count"] == len(late) - 25
        assert audit[0]["payload"]["missedSlots"]["to"] == late[-26].isoformat().replace("+00:00", "Z")


async def test_paused_routine_and_disabled_trigger_never_fire(
    db: asyncpg.Connection, scheduler: Scheduler
) -> None:
    world = await make_world(db)
    paused = await make_routine(db, world, status="paused")
    active = await make_routine(db, world)
    now = await _db_now(db)
    t1 = await make_schedule_trigger(db, world, paused, "* * * * *", "UTC", now)
    t2 = await make_schedule_trigger(db, world, active, "* * * * *", "UTC", now)
    await db.execute("UPDATE routine_triggers SET enabled = false WHERE id = $1", t2)
    await scheduler.tick()
    assert await _runs(db, t1) == []
    assert await _runs(db, t2) == []
    # The paused routine's trigger is parked (next_run_at NULL) rather than re-claimed every tick.
    assert await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", t1) is None


async def test_due_claim_uses_the_partial_index_with_a_million_triggers(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    await db.execute(
        "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
        " SELECT $1, $2, 'schedule', '0 0 1 1 *', 'UTC', now() + interval '30 days' + g * interval '1 second'"
        " FROM generate_series(1, 1000000) g",
        routine,
        world.company_id,
    )
    await db.execute(
        "UPDATE routine_triggers SET next_run_at = now() - interval '1 second'"
        " WHERE id IN (SELECT id FROM routine_triggers LIMIT 1000)"
    )
    await db.execute("ANALYZE routine_triggers")
    # Due now (no lower bound), and due by a slot two seconds ahead but not yet (a prepared slot).
    for due_by, after in (("now()", "'-infinity'"), ("now() + interval '2 seconds'", "now()")):
        claim = QUERIES["claim_due_triggers"].replace("$1", due_by).replace("$2", "500").replace("$3", after)
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + claim))
        assert "routine_triggers_due" in plan
        assert "Seq Scan on routine_triggers" not in plan


@pytest.mark.e2e
async def test_three_scheduler_processes_fire_each_slot_exactly_once(
    db: asyncpg.Connection, stack: Stack, tmp_path: Path
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, catch_up_policy="enqueue_missed_with_cap")
    now = await _db_now(db)
    triggers = [await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", None) for _ in range(200)]
    env = stack.env(tick_interval_sec=0.05, misfire_grace_sec=3600, claim_batch_size=50)
    schedulers = [start_service("scheduler", env, tmp_path) for _ in range(3)]
    try:
        # Five rounds: each moves every trigger back 1–4 slots, so the replicas race for them.
        expected: set[tuple[uuid.UUID, datetime]] = set()
        for round_ in range(5):
            back = 1 + round_ % 4
            await db.execute(
                "UPDATE routine_triggers SET next_run_at = $1 WHERE id = ANY($2)",
                now - timedelta(minutes=back),
                triggers,
            )
            expected |= {(t, now - timedelta(minutes=m)) for t in triggers for m in range(0, back + 1)}

            async def drained() -> bool:
                return not await db.fetchval(
                    "SELECT count(*) FROM routine_triggers WHERE next_run_at <= $1", now
                )

            await wait_until(drained, timeout=30)
        rows = await db.fetch(
            "SELECT trigger_id, scheduled_for, triggered_at FROM routine_runs WHERE trigger_id = ANY($1)",
            triggers,
        )
        got = [(r["trigger_id"], r["scheduled_for"]) for r in rows]
        # (At most once per slot is the unique index's job; what the replicas must get right:)
        assert {g for g in got if g[1] <= now} == expected  # none lost
        assert [r for r in rows if r["triggered_at"] < r["scheduled_for"]] == []  # none fired early
    finally:
        for s in schedulers:
            s.kill()


@pytest.mark.e2e
async def test_scheduler_killed_mid_batch_loses_and_duplicates_nothing(
    db: asyncpg.Connection, stack: Stack, tmp_path: Path
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    now = await _db_now(db)
    await db.execute(
        "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
        " SELECT $1, $2, 'schedule', '* * * * *', 'UTC', $3 FROM generate_series(1, 2000)",
        routine,
        world.company_id,
        now,
    )
    # Each batch takes at least 0.1 s (40 of them, two at a time): the kill lands mid-way even
    # when this process pauses between seeing the first run and sending it.
    await db.execute(
        "CREATE FUNCTION slow_batch() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$"
    )
    await db.execute(
        "CREATE TRIGGER slow_batch AFTER INSERT ON routine_runs FOR EACH STATEMENT EXECUTE FUNCTION slow_batch()"
    )
    env = stack.env(tick_interval_sec=0.05, misfire_grace_sec=3600, claim_batch_size=50)
    first = start_service("scheduler", env, tmp_path)

    async def some_fired() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM routine_runs") > 0)

    await wait_until(some_fired, timeout=30, interval=0.005)
    first.stop(signal.SIGKILL)

    async def backends_gone() -> bool:  # whatever the killed process had sent is now settled
        return not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scheduler'"
        )

    await wait_until(backends_gone, timeout=30)
    counts = await db.fetchrow(
        "SELECT (SELECT count(*) FROM routine_runs),"
        " (SELECT count(*) FROM routine_triggers WHERE next_run_at > $1)",
        now,
    )
    assert counts is not None
    fired_before, advanced = counts
    # The kill landed while the scheduler was working through its batches …
    assert 0 < fired_before < 2000
    # … and a batch is all or nothing: whole batches recorded, exactly their triggers advanced.
    assert fired_before % 50 == 0
    assert advanced == fired_before
    second = start_service("scheduler", env, tmp_path)
    try:

        async def all_fired() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(DISTINCT trigger_id) FROM routine_runs WHERE scheduled_for = $1", now
                )
                == 2000
            )

        await wait_until(all_fired, timeout=60)
    finally:
        second.kill()


async def test_sleep_is_until_the_earliest_slot_bounded_by_the_max_sleep(
    db: asyncpg.Connection, scheduler: Scheduler
) -> None:
    assert await scheduler.seconds_until_due() == scheduler.settings.tick_interval_sec  # nothing scheduled
    far = await db.fetchval("SELECT now() + interval '10 minutes'")
    trigger = await _scheduled(db, "0 * * * *", far)
    assert await scheduler.seconds_until_due() == scheduler.settings.tick_interval_sec
    await db.execute(
        "UPDATE routine_triggers SET next_run_at = clock_timestamp() + interval '0.5 seconds' WHERE id = $1",
        trigger,
    )
    assert 0 < await scheduler.seconds_until_due() <= 0.5


async def test_a_due_slot_locked_by_another_replica_is_polled_not_spun_on(
    db: asyncpg.Connection, scheduler: Scheduler
) -> None:
    overdue = await db.fetchval("SELECT now() - interval '10 seconds'")  # a one-slot yearly schedule
    trigger = await _scheduled(db, "0 0 1 1 *", overdue)
    async with db.transaction():
        await db.execute("SELECT 1 FROM routine_triggers WHERE id = $1 FOR UPDATE", trigger)
        assert await scheduler.tick() == 0  # skipped: the other "replica" holds it
        assert await scheduler.seconds_until_due() == LOCKED_RETRY_SEC
    assert await scheduler.tick() == 1


@contextlib.asynccontextmanager
async def _running(stack: Stack, **overrides: Any) -> AsyncIterator[Scheduler]:
    """A scheduler loop in this process (two-minute max sleep: it wakes for slots and trigger
    changes only)."""
    settings = SchedulerSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, tick_interval_sec=120, **overrides
    )
    async with service_connections(settings, "test") as (database, bus):
        scheduler = Scheduler(settings, database, bus, asyncio.Event())
        follower = asyncio.create_task(scheduler.follow_trigger_changes())
        await asyncio.wait_for(scheduler.following.wait(), 10)
        loop = asyncio.create_task(scheduler.run())
        try:
            yield scheduler
        finally:
            scheduler.stopping.set()
            await asyncio.wait_for(loop, 10)
            follower.cancel()


async def test_the_scheduler_wakes_at_the_slot_not_at_its_max_sleep(
    db: asyncpg.Connection, stack: Stack
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    # Rows first, the slot last: the scheduler starts well before it is due.
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '2 seconds'")
    trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", slot)
    async with _running(stack):
        runs = await wait_until(lambda: _runs(db, trigger), timeout=30)
    assert [r["scheduled_for"] for r in runs] == [slot]
    assert runs[0]["triggered_at"] >= slot  # never early


async def test_a_trigger_change_wakes_the_sleeping_scheduler(
    db: asyncpg.Connection, stack: Stack, sleepy_scheduler: Scheduler
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    await asyncio.sleep(0.2)  # let the loop go to sleep: nothing is scheduled, so for two minutes
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '1 second'")
    trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", slot)
    await sleepy_scheduler.bus.publish_quietly(Subjects.TRIGGERS_CHANGED, {"triggerId": str(trigger)})
    runs = await wait_until(lambda: _runs(db, trigger), timeout=30)
    assert [r["scheduled_for"] for r in runs] == [slot]


async def test_a_long_outage_is_caught_up_in_bounded_transactions(
    db: asyncpg.Connection, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a week down, each every-minute trigger has ~10,000 missed slots to count (about 0.2 s
    of planning each). One claim planned its whole batch inside one transaction: 150 such triggers
    took longer than Postgres' idle-in-transaction timeout, the session was killed, the next tick
    claimed the same triggers — and nothing on the instance fired again. Planning now stops at a
    budget (here 0: one trigger per transaction) and the rest stay due for the next claim."""
    monkeypatch.setattr(ticker, "PLAN_BUDGET_SEC", 0.0)
    week_ago = await _db_now(db) - timedelta(days=7)
    triggers = []
    for zone in ("UTC", "Europe/London", "America/New_York", "Asia/Tokyo"):  # one plan each
        world = await make_world(db)
        routine = await make_routine(db, world)
        triggers.append(await make_schedule_trigger(db, world, routine, "* * * * *", zone, week_ago))
    due = "SELECT count(*) FROM routine_triggers WHERE id = ANY($1) AND next_run_at <= now()"
    more, runs = await scheduler.claim_batch()
    assert more  # stopped at the budget with due triggers left
    assert await db.fetchval(due, triggers) == 3  # one planned and advanced per transaction
    assert len(runs) == 1  # the on-time slot of that one (its missed ones: one audit run)
    await scheduler.tick()  # drains the rest, batch after batch
    assert await db.fetchval(due, triggers) == 0
    audits = await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE trigger_id = ANY($1) AND status = 'skipped'", triggers
    )
    assert audits == 4


async def _held(db: asyncpg.Connection, triggers: list[uuid.UUID]) -> int:
    """How many of these triggers another transaction holds (a replica claimed them)."""
    async with db.transaction():
        free = await db.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM routine_triggers WHERE id = ANY($1)"
            " FOR NO KEY UPDATE SKIP LOCKED) f",
            triggers,
        )
    return len(triggers) - int(free)


async def _all_held(db: asyncpg.Connection, triggers: list[uuid.UUID], slot: datetime) -> bool:
    """All of these triggers are held by schedulers preparing `slot` (fails if it came first)."""
    assert await db.fetchval("SELECT clock_timestamp()") < slot, "not prepared before the slot"
    return await _held(db, triggers) == len(triggers)


async def _schedule_slot(db: asyncpg.Connection, triggers: list[uuid.UUID], seconds_ahead: int) -> datetime:
    """Make these triggers due at a whole second `seconds_ahead` from now (give or take one) and
    return it. Tests with scheduler processes call it once they are up (schedulers look every
    second): how long a process takes to start on a busy machine is then no part of the race (it
    once took the whole lead)."""
    slot: datetime = await db.fetchval(
        "UPDATE routine_triggers SET next_run_at = date_trunc('second', now()) + make_interval(secs => $2)"
        " WHERE id = ANY($1) RETURNING next_run_at",
        triggers,
        seconds_ahead,
    )
    return slot


async def _first_seen(
    db: asyncpg.Connection, triggers: list[uuid.UUID], slot: datetime, within: float = 60
) -> datetime:
    """Poll (every 2 ms) until all of the slot's runs are visible; the database clock of the poll
    that first saw any. Fails if one was visible before the slot, or not all `within` seconds
    after it."""
    first: datetime | None = None
    deadline = slot + timedelta(seconds=within)
    while True:
        row = await db.fetchrow(
            "SELECT clock_timestamp() AS at, count(*) AS n FROM routine_runs"
            " WHERE trigger_id = ANY($1) AND scheduled_for = $2",
            triggers,
            slot,
        )
        assert row is not None
        if row["n"]:
            assert row["at"] >= slot, f"{row['n']} runs visible at {row['at']}, before the slot {slot}"
            first = first or row["at"]
        if first is not None and row["n"] == len(triggers):
            return first
        assert row["at"] < deadline, f"only {row['n']} of {len(triggers)} runs {within} s after the slot"
        await asyncio.sleep(0.002)


async def test_a_coming_slot_is_recorded_ahead_and_visible_only_at_the_slot(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """The slot's runs are claimed, planned and inserted before it (the trigger is held), committed
    at it. A run recorded meanwhile for the routine does not wait; a stop while holding the slot
    still fires it at the slot."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", slot)
    async with _running(stack, prepare_ahead_sec=2) as scheduler:
        await wait_until(lambda: _all_held(db, [trigger], slot), timeout=10, interval=0.01)
        await db.execute(
            "INSERT INTO routine_runs (routine_id, company_id, source, payload) VALUES ($1, $2, 'manual', '{}')",
            routine,
            world.company_id,
        )
        assert await db.fetchval("SELECT clock_timestamp()") < slot  # it did not wait for the slot
        scheduler.stopping.set()
        seen = await _first_seen(db, [trigger], slot)
    runs = await _runs(db, trigger)
    assert [(r["scheduled_for"], r["triggered_at"]) for r in runs] == [(slot, slot)]
    assert seen >= slot
    advanced = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", trigger)
    assert advanced == slot.replace(second=0) + timedelta(minutes=1)  # the next minute


@pytest.mark.e2e
async def test_replicas_preparing_a_slot_fire_it_once_even_when_one_is_killed_holding_it(
    db: asyncpg.Connection, stack: Stack, tmp_path: Path
) -> None:
    """Two scheduler processes prepare the same slot (SKIP LOCKED shares its triggers out); one is
    SIGKILLed while holding its share. Its transaction rolls back: the other fires that share right
    after the slot. Every trigger fires the slot once, and no run is visible before it."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    triggers = [await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", None) for _ in range(300)]
    env = stack.env(prepare_ahead_sec=3, claim_batch_size=50)
    first, second = (start_service("scheduler", env, tmp_path, wait_ready=False) for _ in range(2))
    try:
        for scheduler in (first, second):
            scheduler.wait_listening()
            scheduler.wait_ready()
        slot = await _schedule_slot(db, triggers, seconds_ahead=5)
        await wait_until(lambda: _all_held(db, triggers, slot), timeout=10, interval=0.01)
        first.stop(signal.SIGKILL)
        await _first_seen(db, triggers, slot)
    finally:
        first.kill()
        second.kill()
    fired = await db.fetch(
        "SELECT trigger_id, count(*) AS n FROM routine_runs WHERE trigger_id = ANY($1) GROUP BY trigger_id",
        triggers,
    )
    assert sorted(r["trigger_id"] for r in fired) == sorted(triggers)
    assert {r["n"] for r in fired} == {1}


async def test_a_trigger_edited_while_its_slot_is_held_keeps_the_advanced_next_fire(
    db: asyncpg.Connection, stack: Stack, admin_token: str
) -> None:
    """An edit arriving while the scheduler holds the trigger for a slot it prepares waits for the
    slot, then builds on the trigger as the slot left it. It used to write back the next fire it
    had read before waiting — the slot just fired — so the slot was claimed a second time (dropped
    as a duplicate by the unique index; after a scheduler outage, an audit of a slot that fired)."""
    async with TestClient(served(api_app(stack))) as client:
        tenant = await make_tenant(client, admin_token, "A")
        routine = await create_routine(client, tenant)
        body = {"kind": "schedule", "cronExpression": "0 0 1 1 *", "timezone": "UTC"}
        trigger = uuid.UUID((await make_trigger(client, tenant, routine["id"], body))["id"])
        slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '3 seconds'")
        await db.execute("UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1", trigger, slot)
        async with _running(stack, prepare_ahead_sec=2):
            await wait_until(lambda: _all_held(db, [trigger], slot), timeout=10, interval=0.01)
            answer = await client.patch(
                f"/api/routine-triggers/{trigger}", json={"label": "renamed"}, headers=auth(tenant.board)
            )
            assert answer.status == 200, await answer.text()
            edited = await answer.json()
    following = datetime(slot.year + 1, 1, 1, tzinfo=UTC)  # the next of a yearly schedule
    assert edited["label"] == "renamed"
    assert datetime.fromisoformat(edited["nextRunAt"]) == following
    assert await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", trigger) == following
    assert [r["scheduled_for"] for r in await _runs(db, trigger)] == [slot]


async def test_a_prepared_slot_keeps_its_own_timeouts_behind_a_pooler(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """Behind a transaction pooler the service's timeouts are not sent and the server's defaults
    rule — here an idle-in-transaction timeout of 300 ms, far below the wait for the slot. The
    prepared transaction sets its own: the slot fires at the slot. It used to be killed while
    waiting, every slot, and fire only at the next look (two minutes later here)."""
    name = stack.database_url.rsplit("/", 1)[1].split("?")[0]
    await db.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 300')
    try:
        world = await make_world(db)
        routine = await make_routine(db, world)
        slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
        trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", slot)
        async with _running(stack, prepare_ahead_sec=2, db_pooler_mode="transaction"):
            await wait_until(lambda: _held(db, [trigger]), timeout=10, interval=0.01)
            seen = await _first_seen(db, [trigger], slot, within=10)
    finally:
        await db.execute(f'ALTER DATABASE "{name}" RESET idle_in_transaction_session_timeout')
    assert seen >= slot


async def test_a_failed_look_is_retried_within_a_second_not_at_the_max_sleep(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """A look at the schedule that fails on the database (here: its claim waits for a lock past
    the lock timeout; a connection killed, a failover look the same) is retried a second later.
    It used to be retried after the longest sleep (two minutes here), so a slot due meanwhile fired
    that much late — and with `idle_in_transaction_session_timeout` low, a pause of the process
    at the wrong moment did exactly that (seen in CI)."""
    trigger = await _scheduled(db, "0 0 1 1 *", datetime(2099, 1, 1, tzinfo=UTC))
    holder = await asyncpg.connect(stack.database_url)
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE routine_triggers IN ACCESS EXCLUSIVE MODE")

        async def waiting() -> bool:  # a look of the scheduler waits for the lock
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'test'"
                    " AND wait_event_type = 'Lock'"
                )
            )

        async with _running(stack, db_lock_timeout_ms=300):
            await wait_until(waiting, timeout=10, interval=0.01)
            await wait_until(lambda: _not(waiting()), timeout=10, interval=0.01)  # it gave up
            # The slot appears as the lock goes: a retry sooner or later than one second after the
            # failure cannot see the table unlocked with only the 2099 slot in it.
            slot = await holder.fetchval(
                "UPDATE routine_triggers SET next_run_at = date_trunc('second', clock_timestamp())"
                " + interval '3 seconds' WHERE id = $1 RETURNING next_run_at",
                trigger,
            )
            await locked.commit()
            seen = await _first_seen(db, [trigger], slot, within=5)
    finally:
        await holder.close()
    assert seen >= slot


async def _not(value: Any) -> bool:
    return not await value


@pytest.mark.e2e
async def test_a_replica_frozen_holding_a_slot_loses_it_within_a_second_of_the_slot(
    db: asyncpg.Connection, stack: Stack, tmp_path: Path
) -> None:
    """A scheduler stopped (SIGSTOP: a GC pause, CPU throttling) while it waits for a slot it
    prepared no longer pins it until the server's idle-in-transaction timeout (30 s by default):
    its transaction's own timeout ends it a second after the slot, and another replica fires it.
    (Stopped in the middle of a protocol exchange instead — between a statement's parse and its
    execution — a session waits for the client with no timeout at all; that window is a round
    trip, not the lead.)"""
    world = await make_world(db)
    routine = await make_routine(db, world)
    triggers = [await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", None) for _ in range(20)]
    env = stack.env(prepare_ahead_sec=2)
    frozen = start_service("scheduler", env, tmp_path)
    try:
        slot = await _schedule_slot(db, triggers, seconds_ahead=4)
        await wait_until(lambda: _all_held(db, triggers, slot), timeout=10, interval=0.01)

        async def waiting_for_the_slot() -> bool:  # every transaction of it that holds some
            return bool(
                await db.fetchval(
                    "SELECT count(*) FILTER (WHERE query LIKE 'SELECT pg_sleep%') >= 1"
                    " AND count(*) FILTER (WHERE query NOT LIKE 'SELECT pg_sleep%') = 0"
                    " FROM pg_stat_activity WHERE application_name = 'scheduler' AND state <> 'idle'"
                )
            )

        await wait_until(waiting_for_the_slot, timeout=10, interval=0.005)
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        other = start_service("scheduler", env, tmp_path)
        try:
            await _first_seen(db, triggers, slot, within=15)
        finally:
            other.kill()
    finally:
        frozen.kill()


class _Published:
    """What the scheduler announces on NATS: run ids asked to be decided, decisions, wake-ups."""

    def __init__(self) -> None:
        self.requested: list[uuid.UUID] = []
        self.decided: dict[uuid.UUID, dict[str, Any]] = {}
        self.wakeups: list[dict[str, Any]] = []

    async def on_requested(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        self.requested += [uuid.UUID(i) for i in body.get("runIds", [body.get("runId")])]

    async def on_dispatched(self, msg: Msg) -> None:
        for d in json.loads(msg.data)["decisions"]:
            self.decided[uuid.UUID(d["runId"])] = d

    async def on_wakeup(self, msg: Msg) -> None:
        self.wakeups.append(json.loads(msg.data))


@contextlib.asynccontextmanager
async def _published(stack: Stack) -> AsyncIterator[_Published]:
    nc = await nats.connect(stack.nats_url)
    got = _Published()
    await nc.subscribe(Subjects.RUNS_REQUESTED, cb=got.on_requested)
    await nc.subscribe(Subjects.RUNS_DISPATCHED, cb=got.on_dispatched)
    await nc.subscribe("agents.*.wakeup", cb=got.on_wakeup)
    await nc.flush()
    try:
        yield got
    finally:
        await nc.drain()


async def _slot_runs(db: asyncpg.Connection, slot: datetime) -> dict[uuid.UUID, asyncpg.Record]:
    """The runs of `slot`, each with its execution issue's creation time (None: no issue)."""
    rows = await db.fetch(
        "SELECT r.*, i.created_at AS issue_created_at FROM routine_runs r"
        " LEFT JOIN issues i ON i.origin_run_id = r.id WHERE r.scheduled_for = $1",
        slot,
    )
    return {r["id"]: r for r in rows}


async def test_a_prepared_slot_is_decided_ahead_and_its_issues_committed_at_the_slot(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """With no dispatcher running, the slot's runs come out decided: the scheduler decided them in
    the transaction that recorded them, as of the slot, and committed both at the slot. Issues
    and runs say the slot (not the moment of preparation); the decisions and the agent's wake-up
    are announced, and nothing is asked of the dispatchers."""
    world = await make_world(db)
    routines = [await make_routine(db, world) for _ in range(3)]
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    triggers = [await make_schedule_trigger(db, world, r, YEARLY, "UTC", slot) for r in routines]
    async with _published(stack) as published, _running(stack, prepare_ahead_sec=2):
        await _first_seen(db, triggers, slot)
        # Asked-for runs are published before the decisions, on the same connection: by the
        # last wake-up, any would have arrived.
        await wait_until(lambda: len(published.wakeups) == 3, timeout=10)
    runs = await _slot_runs(db, slot)
    assert {r["routine_id"] for r in runs.values()} == set(routines)
    for run in runs.values():
        assert run["status"] == "issue_created"
        assert run["decided_at"] == run["triggered_at"] == slot
        assert run["issue_created_at"] == slot
    assert set(published.decided) == set(runs)
    assert {d["issueId"] for d in published.decided.values()} == {
        str(r["linked_issue_id"]) for r in runs.values()
    }
    assert sorted(r for w in published.wakeups for r in w["runIds"]) == sorted(str(i) for i in runs)
    assert published.requested == []
    last = await db.fetch(
        "SELECT last_triggered_at, last_enqueued_at FROM routines WHERE id = ANY($1)", routines
    )
    assert {(r["last_triggered_at"], r["last_enqueued_at"]) for r in last} == {(slot, slot)}


async def test_a_prepared_slot_leaves_a_routine_held_elsewhere_to_the_dispatcher(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """A routine another transaction holds while the slot is prepared (a dispatcher deciding a
    webhook fire of it, an edit) is skipped, not waited for: the slot still fires at the slot,
    that routine's run undecided and asked of the dispatchers, the others decided."""
    world = await make_world(db)
    free, held = await make_routine(db, world), await make_routine(db, world)
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    triggers = [await make_schedule_trigger(db, world, r, YEARLY, "UTC", slot) for r in (free, held)]
    holder = await asyncpg.connect(stack.database_url)
    try:
        async with holder.transaction(), _published(stack) as published:
            await holder.execute("SELECT 1 FROM routines WHERE id = $1 FOR NO KEY UPDATE", held)
            async with _running(stack, prepare_ahead_sec=2, db_lock_timeout_ms=60_000):
                seen = await _first_seen(db, triggers, slot, within=3)
                await wait_until(lambda: published.requested and published.decided, timeout=10)
    finally:
        await holder.close()
    runs = {r["routine_id"]: r for r in (await _slot_runs(db, slot)).values()}
    assert seen < slot + timedelta(seconds=2)
    assert runs[free]["status"] == "issue_created" and runs[free]["issue_created_at"] == slot
    assert runs[held]["status"] == "received" and runs[held]["decided_at"] is None
    assert published.requested == [runs[held]["id"]]
    assert set(published.decided) == {runs[free]["id"]}


async def test_a_prepared_batch_that_cannot_be_decided_is_left_to_the_dispatcher(
    db: asyncpg.Connection, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose decision fails for a reason retrying cannot cure (here the issue of one
    routine is refused by the database) is rolled back to its savepoint: its runs are still
    recorded at the slot and asked of the dispatchers (which decide them one by one); the other
    batches of the slot are decided, and the scheduler goes on."""
    monkeypatch.setattr(ticker, "DECIDE_AHEAD_BATCH", 10)
    world = await make_world(db)
    routines = [await make_routine(db, world) for _ in range(30)]
    poison = routines[17]
    await db.execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.origin_id = '{poison}' THEN RAISE EXCEPTION 'poisoned routine'; END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON issues FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
    )
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    triggers = [await make_schedule_trigger(db, world, r, YEARLY, "UTC", slot) for r in routines]
    async with (
        _published(stack) as published,
        _running(stack, prepare_ahead_sec=2, claim_concurrency=1) as scheduler,
    ):
        await _first_seen(db, triggers, slot, within=3)
        await wait_until(lambda: len(published.requested) + len(published.decided) == 30, timeout=10)
        requested, decided = set(published.requested), set(published.decided)
        later = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '3 seconds'")
        again = await make_schedule_trigger(db, world, routines[0], "0 0 1 1 *", "UTC", later)
        await scheduler.bus.publish_quietly(Subjects.TRIGGERS_CHANGED, {"triggerId": str(again)})
        await _first_seen(db, [again], later)  # the scheduler lives on
    runs = {r["routine_id"]: r for r in (await _slot_runs(db, slot)).values()}
    undecided = {r["id"] for r in runs.values() if r["status"] == "received"}
    assert runs[poison]["id"] in undecided
    assert len(undecided) == 10  # the poisoned routine's batch, and only it
    assert {r["status"] for r in runs.values() if r["id"] not in undecided} == {"issue_created"}
    assert requested == undecided
    assert decided == {r["id"] for r in runs.values()} - undecided


async def test_an_issue_held_elsewhere_does_not_make_a_prepared_slot_late(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """Coalescing a run into the routine's open issue updates that issue. Held by another
    transaction (an agent's status update) past the slot, it is waited for only until the slot
    is due to commit: the batch is then rolled back to its savepoint and asked of the
    dispatchers, and the slot fires on time. It used to wait for the holder, holding every run of
    the transaction back."""
    world = await make_world(db)
    routine = await make_routine(db, world)  # coalesce_if_active
    issue = await db.fetchval(
        "INSERT INTO issues (company_id, title, status, assignee_agent_id, origin_kind, origin_id)"
        " VALUES ($1, 'open', 'todo', $2, 'routine_execution', $3) RETURNING id",
        world.company_id,
        world.agent_id,
        routine,
    )
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    trigger = await make_schedule_trigger(db, world, routine, YEARLY, "UTC", slot)
    holder = await asyncpg.connect(stack.database_url)
    try:
        async with holder.transaction(), _published(stack) as published:
            await holder.execute("SELECT 1 FROM issues WHERE id = $1 FOR UPDATE", issue)
            # A session lock timeout longer than the test: waiting for the holder is never on time.
            async with _running(stack, prepare_ahead_sec=2, db_lock_timeout_ms=60_000):
                seen = await _first_seen(db, [trigger], slot, within=3)
                await wait_until(lambda: published.requested, timeout=10)
                assert await db.fetchval("SELECT clock_timestamp()") < slot + timedelta(
                    seconds=3
                )  # still held
    finally:
        await holder.close()
    assert seen < slot + timedelta(seconds=2)  # the lead: a pause of this process at the slot is not lateness
    (run,) = (await _slot_runs(db, slot)).values()
    assert run["status"] == "received"
    assert published.requested == [run["id"]]
    assert published.decided == {}
    assert await db.fetchval("SELECT coalesced_fire_count FROM issues WHERE id = $1", issue) == 0


async def test_a_prepared_run_that_would_fail_is_left_to_the_dispatchers(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """A run that would fail (here: a required variable without a value) may start a failure
    alert or an auto-pause, which act on the routine and all its triggers — the dispatchers'
    work, not a prepared transaction's (it may not lock them until the slot). Its batch is left
    to the dispatchers; it used to be decided failed in the scheduler."""
    world = await make_world(db)
    variables = [{"name": "target", "type": "text", "required": True}]
    routine = await make_routine(db, world, variables=variables, description="check {{target}}")
    assert await db.fetchval("SELECT jsonb_typeof(variables) FROM routines WHERE id = $1", routine) == "array"
    slot = await db.fetchval("SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds'")
    trigger = await make_schedule_trigger(db, world, routine, YEARLY, "UTC", slot)
    async with _published(stack) as published, _running(stack, prepare_ahead_sec=2):
        await _first_seen(db, [trigger], slot, within=3)
        await wait_until(lambda: published.requested, timeout=10)
    (run,) = (await _slot_runs(db, slot)).values()
    assert run["status"] == "received"
    assert published.requested == [run["id"]]
    assert published.decided == {}
