"""Dispatcher decisions against real Postgres and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import asyncpg
import nats.js.errors
import pytest
from nats.aio.msg import Msg

from routines_api.models import WakeupEvent
from routines_dispatcher import worker
from routines_dispatcher.worker import Dispatcher
from shared.bus import RUNS_STREAM, Bus, Subjects
from shared.db import Database, init_connection
from shared.lifecycle import Supervisor
from shared.runs import RUNS_PER_MESSAGE, publish_run_requested, publish_runs_requested
from shared.settings import DispatcherSettings
from tests.factories import decide, make_issue, make_routine, make_run, make_world
from tests.support import Stack, never_waits_on, open_database, publish_raw, served, wait_until

OPEN = ["backlog", "todo", "in_progress", "in_review", "blocked"]


async def _issue_count(db: asyncpg.Connection, routine_id: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM issues WHERE origin_id = $1", routine_id))


@pytest.mark.parametrize("policy", ["coalesce_if_active", "skip_if_active", "always_enqueue"])
@pytest.mark.parametrize("prior", [None, *OPEN, "done", "cancelled"])
async def test_policy_against_each_prior_issue_state(
    db: asyncpg.Connection, dispatcher_db: Database, policy: str, prior: str | None
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, policy)
    prior_issue = await make_issue(db, world, routine, prior) if prior else None
    run = await make_run(db, world, routine)
    await decide(dispatcher_db, [run])
    row = await db.fetchrow("SELECT * FROM routine_runs WHERE id = $1", run)
    active = prior in OPEN
    if not active or policy == "always_enqueue":
        assert row["status"] == "issue_created"
        issue = await db.fetchrow("SELECT * FROM issues WHERE id = $1", row["linked_issue_id"])
        assert issue["origin_run_id"] == run
        assert issue["status"] == "todo"
        assert issue["payload"] == {"n": 1}
        assert await _issue_count(db, routine) == (2 if prior else 1)
    else:
        assert row["status"] == ("coalesced" if policy == "coalesce_if_active" else "skipped")
        assert row["linked_issue_id"] == prior_issue
        assert await _issue_count(db, routine) == 1
        count = await db.fetchval("SELECT coalesced_fire_count FROM issues WHERE id = $1", prior_issue)
        assert count == (1 if policy == "coalesce_if_active" else 0)
    assert row["decided_at"] is not None
    assert await db.fetchval("SELECT last_triggered_at FROM routines WHERE id = $1", routine) is not None


@pytest.mark.parametrize(
    ("policy", "issues", "statuses"),
    [
        ("coalesce_if_active", 1, {"issue_created": 1, "coalesced": 49}),
        ("skip_if_active", 1, {"issue_created": 1, "skipped": 49}),
        ("always_enqueue", 50, {"issue_created": 50}),
    ],
)
async def test_fifty_simultaneous_fires(
    db: asyncpg.Connection, dispatcher_db: Database, policy: str, issues: int, statuses: dict[str, int]
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, policy)
    runs = [await make_run(db, world, routine) for _ in range(50)]
    # 50 concurrent transactions, one run each: the routine lock serialises them.
    await asyncio.gather(*(decide(dispatcher_db, [run]) for run in runs))
    assert await _issue_count(db, routine) == issues
    got = {
        r["status"]: r["n"]
        for r in await db.fetch(
            "SELECT status, count(*) AS n FROM routine_runs WHERE routine_id = $1 GROUP BY status", routine
        )
    }
    assert got == statuses
    if policy == "coalesce_if_active":
        issue = await db.fetchrow("SELECT * FROM issues WHERE origin_id = $1", routine)
        assert issue["coalesced_fire_count"] == 49
        linked = await db.fetchval(
            "SELECT count(*) FROM routine_runs WHERE status = 'coalesced' AND linked_issue_id = $1"
            " AND coalesced_into_run_id = $2",
            issue["id"],
            issue["origin_run_id"],
        )
        assert linked == 49


async def test_archived_routine_fails_the_run(db: asyncpg.Connection, dispatcher_db: Database) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, status="archived")
    run = await make_run(db, world, routine)
    await decide(dispatcher_db, [run])
    row = await db.fetchrow("SELECT status, failure_reason FROM routine_runs WHERE id = $1", run)
    assert (row["status"], row["failure_reason"]) == ("failed", "routine archived")


async def test_runs_named_again_after_their_decision_are_not_locked(
    db: asyncpg.Connection, dispatcher_db: Database, database_url: str
) -> None:
    # A redelivered message, or one the sweeper beat, names runs decided already. Deciding it must
    # not lock them: the API may hold one (an agent completing its issue completes the run, then
    # may update the routine's alert state — a deadlock with a decision holding the routine).
    world = await make_world(db)
    routine = await make_routine(db, world)
    decided = await make_run(db, world, routine)
    await decide(dispatcher_db, [decided])
    fresh = await make_run(db, world, routine)
    api = await asyncpg.connect(database_url)
    try:
        async with api.transaction():
            await api.execute("UPDATE routine_runs SET status = 'completed' WHERE id = $1", decided)
            api_pid = await api.fetchval("SELECT pg_backend_pid()")
            deciding = decide(dispatcher_db, [decided, fresh])
            await never_waits_on(db, api_pid, deciding, "the decision waits on a run decided already")
    finally:
        await api.close()
    rows = await db.fetch("SELECT id, status FROM routine_runs WHERE routine_id = $1", routine)
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses == {decided: "completed", fresh: "coalesced"}


@dataclass
class InProcessDispatcher:
    """A dispatcher in this process: the test starts its loops, leaving `_dispatcher` stops them."""

    dispatcher: Dispatcher
    loops: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def bus(self) -> Bus:
        return self.dispatcher.bus

    def consume(self) -> asyncio.Task[None]:
        """Start its consumer loop (the durable pull consumer of runs.requested)."""
        return self._start(self.dispatcher.consume())

    def sweep(self) -> asyncio.Task[None]:
        """Start its sweeper loop (runs nobody published)."""
        return self._start(self.dispatcher.sweep())

    def _start(self, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(loop)
        self.loops.append(task)
        return task


@contextlib.asynccontextmanager
async def _dispatcher(
    stack: Stack, database: Database, **overrides: Any
) -> AsyncIterator[InProcessDispatcher]:
    """A dispatcher on `database` with a bus of its own. Leaving the block tells it to stop and
    awaits its loops (an error in one fails the test), then closes the bus."""
    settings = DispatcherSettings(database_url=stack.database_url, nats_url=stack.nats_url, **overrides)
    bus = Bus(stack.nats_url, "test-dispatcher")
    await bus.connect_forever()
    local = InProcessDispatcher(Dispatcher(settings, database, bus, asyncio.Event()))
    try:
        yield local
    finally:
        local.dispatcher.stopping.set()
        try:
            for loop in local.loops:
                await loop
        finally:
            await bus.close()


async def test_same_message_twice_gives_one_decision(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    run = await make_run(db, world, routine)
    dispatched: list[bytes] = []

    async def collect(msg: Msg) -> None:
        dispatched.append(msg.data)

    async def announced() -> bool:
        return bool(dispatched)

    # One message per fetch, so the second copy is a separate delivery (not merged in one batch).
    async with _dispatcher(stack, dispatcher_db, fetch_batch_size=1) as local:
        bus = local.bus
        await bus.subscribe(Subjects.RUNS_DISPATCHED, collect)  # drained when the bus closes
        # Different Nats-Msg-Id so JetStream's own de-duplication does not hide the second copy.
        await bus.publish_acked(Subjects.RUNS_REQUESTED, {"runId": str(run)}, msg_id="a")
        await bus.publish_acked(Subjects.RUNS_REQUESTED, {"runId": str(run)}, msg_id="b")
        local.consume()
        await wait_until(lambda: _status_is(db, run, "issue_created"))

        async def both_handled() -> bool:  # both copies delivered and acknowledged
            info = await bus.dispatcher_consumer_info()
            return (
                info.delivered is not None
                and info.delivered.stream_seq >= 2
                and info.num_pending == 0
                and info.num_ack_pending == 0
            )

        await wait_until(both_handled)
        await bus.flush()  # what was published before the acks has reached our subscription
        await wait_until(announced)
    assert await _issue_count(db, routine) == 1
    assert [json.loads(m)["decisions"] for m in dispatched] == [
        [{"runId": str(run), "status": "issue_created", "issueId": ANY}]
    ]


async def _status_is(db: asyncpg.Connection, run: uuid.UUID, status: str) -> bool:
    return bool(await db.fetchval("SELECT status = $2 FROM routine_runs WHERE id = $1", run, status))


async def test_unknown_and_unparseable_messages_are_terminated(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    good = await make_run(db, world, routine)
    async with _dispatcher(stack, dispatcher_db) as local:
        bus = local.bus
        await bus.publish_acked(Subjects.RUNS_REQUESTED, {"runId": str(uuid.uuid4())}, msg_id="x")
        await publish_raw(stack.nats_url, Subjects.RUNS_REQUESTED, b"not json")
        await publish_run_requested(bus, good, routine)
        local.consume()
        await wait_until(lambda: _status_is(db, good, "issue_created"))

        async def drained() -> bool:
            info = await bus.dispatcher_consumer_info()
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(drained)


async def test_sweeper_decides_runs_nobody_published(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    runs = [await make_run(db, world, routine) for _ in range(5)]
    async with _dispatcher(stack, dispatcher_db, sweep_after_sec=0, sweep_interval_sec=0.2) as local:
        local.sweep()
        for run in runs:
            await wait_until(lambda run=run: _status_is(db, run, "issue_created"))
    assert await _issue_count(db, routine) == 5


async def _batched_runs(db: asyncpg.Connection) -> list[set[uuid.UUID]]:
    return [set(r["run_ids"]) for r in await db.fetch("SELECT run_ids FROM received_batches ORDER BY id")]


async def test_the_sweeper_keeps_a_batch_until_it_has_seen_every_run_of_it_decided(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """Undecided runs are found through the batches that recorded them (migration 0010). A sweep
    deletes a batch whose runs are all decided; one with a run still undecided stays (here another
    transaction holds the run's routine, so the sweep skips it) until a sweep sees it decided."""
    world = await make_world(db)
    decided_routine = await make_routine(db, world, "always_enqueue")
    held_routine = await make_routine(db, world, "always_enqueue")
    decided = [await make_run(db, world, decided_routine) for _ in range(3)]
    await decide(dispatcher_db, decided)
    held = await make_run(db, world, held_routine)
    assert await _batched_runs(db) == [{run} for run in [*decided, held]]

    async with _dispatcher(stack, dispatcher_db, sweep_after_sec=600) as local:
        await local.dispatcher._sweep_once()  # every batch is younger than that: left alone
        assert len(await _batched_runs(db)) == 4
    async with _dispatcher(stack, dispatcher_db, sweep_after_sec=0) as local:
        async with _routine_held_locked(stack, held_routine):
            await local.dispatcher._sweep_once()
            assert await _batched_runs(db) == [{held}]
            assert await _status_is(db, held, "received")
        await local.dispatcher._sweep_once()  # decides it, and so settles its batch
        assert await _status_is(db, held, "issue_created")
        assert await _batched_runs(db) == []


async def test_a_sweep_never_waits_on_a_batch_another_sweep_is_deleting(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """Two dispatchers' sweeps may settle the same batches at once. Each leaves a batch the other
    is deleting to it, in both of its deletes (of batches found settled, and of batches it has just
    settled): waiting on it instead, two sweeps deleting in different orders could deadlock."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    settled = [await make_run(db, world, routine) for _ in range(2)]
    await decide(dispatcher_db, settled)
    undecided = await make_run(db, world, routine)
    batches = {
        run: await db.fetchval("SELECT id FROM received_batches WHERE $1 = ANY(run_ids)", run)
        for run in [*settled, undecided]
    }
    other = await asyncpg.connect(stack.database_url)
    try:
        async with other.transaction():  # another sweep, deleting a settled batch and the undecided run's
            await other.execute(
                "DELETE FROM received_batches WHERE id = ANY($1::bigint[])",
                [batches[settled[0]], batches[undecided]],
            )
            async with _dispatcher(stack, dispatcher_db, sweep_after_sec=0) as local:
                assert await asyncio.wait_for(local.dispatcher._sweep_once(), timeout=10) is None
            assert await _status_is(db, undecided, "issue_created")
            # Its own: deleted; those the other transaction is deleting: left to it.
            assert await _batched_runs(db) == [{settled[0]}, {undecided}]
    finally:
        await other.close()
    assert await _batched_runs(db) == []


async def test_a_sweep_goes_on_past_batches_it_cannot_settle(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches whose runs another transaction holds do not hide the ones recorded after them: a
    sweep that looked at as many batches as it may goes on from the last one, at once."""
    monkeypatch.setattr(worker, "SWEEP_BATCHES", 2)
    world = await make_world(db)
    held_routine = await make_routine(db, world, "always_enqueue")
    free_routine = await make_routine(db, world, "always_enqueue")
    held = [await make_run(db, world, held_routine) for _ in range(2)]
    free = await make_run(db, world, free_routine)
    async with (
        _dispatcher(stack, dispatcher_db, sweep_after_sec=0) as local,
        _routine_held_locked(stack, held_routine),
    ):
        assert await local.dispatcher._sweep_once() == 0.0  # two batches, neither settled
        assert await _status_is(db, free, "received")
        assert await local.dispatcher._sweep_once() is None  # the rest: the last batch
        assert await _status_is(db, free, "issue_created")
        assert await _batched_runs(db) == [{run} for run in held]
        assert await local.dispatcher._sweep_once() == 0.0  # from the oldest again


async def test_a_sweep_starts_from_the_oldest_again_while_every_sweep_is_full(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is timed by its transaction's start, so one committed late lands behind a sweep
    that has gone on past it. While sweeps stay full (a backlog), each chain of them still starts
    from the oldest batch once it has gone on for SWEEP_INTERVAL_SEC."""
    monkeypatch.setattr(worker, "SWEEP_BATCHES", 1)
    world = await make_world(db)
    held_routine = await make_routine(db, world, "always_enqueue")
    late_routine = await make_routine(db, world, "always_enqueue")
    late_writer = await asyncpg.connect(stack.database_url)
    await init_connection(late_writer)
    try:
        late_tx = late_writer.transaction()
        await late_tx.start()
        late = await make_run(late_writer, world, late_routine)  # timed now, committed later
        held = [await make_run(db, world, held_routine) for _ in range(3)]
        async with (
            _dispatcher(stack, dispatcher_db, sweep_after_sec=0, sweep_interval_sec=0.3) as local,
            _routine_held_locked(stack, held_routine),
        ):
            assert await local.dispatcher._sweep_once() == 0.0  # the first held batch
            await late_tx.commit()
            assert await local.dispatcher._sweep_once() == 0.0  # on from it: the second
            assert await _status_is(db, late, "received")
            await asyncio.sleep(0.4)
            assert await local.dispatcher._sweep_once() == 0.0  # from the oldest: the late one
            assert await _status_is(db, late, "issue_created")
        assert all([await _status_is(db, run, "received") for run in held])
    finally:
        await late_writer.close()


async def test_a_sweep_takes_about_a_thousand_runs_and_always_one_batch(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "SWEEP_RUNS", 10)
    world = await make_world(db)
    routine = await make_routine(db, world, "coalesce_if_active")
    insert = "INSERT INTO routine_runs (routine_id, company_id, source) SELECT $1, $2, 'api' FROM generate_series(1, $3)"
    for size in (4, 6, 30, 2):
        await db.execute(insert, routine, world.company_id, size)
    async with _dispatcher(stack, dispatcher_db, sweep_after_sec=0) as local:
        assert await local.dispatcher._sweep_once() == 0.0  # 4 + 6 runs: the budget, before the third batch
        assert [len(b) for b in await _batched_runs(db)] == [30, 2]
        assert await local.dispatcher._sweep_once() == 0.0  # the large batch alone
        assert [len(b) for b in await _batched_runs(db)] == [2]
        assert await local.dispatcher._sweep_once() is None
        assert await _batched_runs(db) == []
    assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'") == 0


async def test_one_batch_deciding_many_runs_of_many_routines(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    """A batch mixing routines with different numbers of coalesced fires, decided in one transaction."""
    world = await make_world(db)
    routines = [await make_routine(db, world) for _ in range(3)]
    runs = [await make_run(db, world, r) for i, r in enumerate(routines) for _ in range(i + 2)]
    await decide(dispatcher_db, runs)
    counts = sorted(
        r["coalesced_fire_count"] for r in await db.fetch("SELECT coalesced_fire_count FROM issues")
    )
    assert counts == [1, 2, 3]
    assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'") == 0


@contextlib.asynccontextmanager
async def _routine_held_locked(
    stack: Stack, routine: uuid.UUID
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Someone else holds the routine's row lock until the yielded release() is awaited (or the end)."""
    holder = await asyncpg.connect(stack.database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM routines WHERE id = $1 FOR UPDATE", routine)
        yield tx.rollback
    finally:
        await holder.close()


async def test_run_that_exhausts_max_deliver_is_failed_with_the_reason(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """A routine row held locked by someone else: lock timeouts → nak → … → failed, never dropped."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    run = await make_run(db, world, routine)
    impatient = DispatcherSettings(database_url=stack.database_url, db_lock_timeout_ms=100)
    async with (
        open_database(impatient, "test") as database,
        _dispatcher(stack, database, db_lock_timeout_ms=100, max_deliver=2) as local,
        _routine_held_locked(stack, routine) as release,
    ):
        await publish_run_requested(local.bus, run, routine)
        local.consume()
        await wait_until(lambda: _status_is(db, run, "failed"), timeout=20)
        await release()
    reason = await db.fetchval("SELECT failure_reason FROM routine_runs WHERE id = $1", run)
    assert reason.startswith("dispatch failed after 2 deliveries")
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


async def test_a_batch_waiting_on_a_locked_routine_does_not_hold_up_the_next_batch(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """Batches are decided concurrently: while one waits for Postgres (here a routine row locked by
    someone else; in production a slow commit), the next batch is fetched and decided. One batch at
    a time, run B would wait behind the blocked run A."""
    world = await make_world(db)
    blocked, free = await make_routine(db, world), await make_routine(db, world)
    run_a, run_b = await make_run(db, world, blocked), await make_run(db, world, free)
    # Lock and statement timeouts far beyond the wait: B must not get through because A gave up.
    patient = DispatcherSettings(
        database_url=stack.database_url, db_lock_timeout_ms=120_000, db_statement_timeout_ms=120_000
    )
    async with (
        open_database(patient, "test") as database,
        _dispatcher(stack, database, fetch_batch_size=1, decide_concurrency=2) as local,
    ):
        async with _routine_held_locked(stack, blocked) as release:
            await publish_run_requested(local.bus, run_a, blocked)
            await publish_run_requested(local.bus, run_b, free)
            local.consume()
            await wait_until(lambda: _status_is(db, run_b, "issue_created"), timeout=20)
            assert await _status_is(db, run_a, "received"), "A is still waiting for the lock"
            await release()
        await wait_until(lambda: _status_is(db, run_a, "issue_created"), timeout=20)


async def _drained(bus: Bus) -> bool:
    """Every message delivered and answered (acked or terminated)."""
    try:
        info = await bus.dispatcher_consumer_info()
    except nats.js.errors.NotFoundError:
        return False  # not created yet
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_runs_recorded_together_are_requested_a_hundred_per_message(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """250 runs of 25 routines announced together are three messages; the dispatcher decides them
    in chunks of `fetch_batch_size` runs (here 40: seven transactions, three at once) and acks the
    three once all their runs are decided."""
    world = await make_world(db)
    routines = [await make_routine(db, world, "always_enqueue") for _ in range(25)]
    runs = [(await make_run(db, world, r), r) for r in routines for _ in range(10)]
    async with _dispatcher(stack, dispatcher_db, fetch_batch_size=40) as local:
        before = (await local.bus.stream_info(RUNS_STREAM)).state.messages
        await publish_runs_requested(local.bus, runs)
        await local.bus.flush()

        async def stored() -> bool:
            return (await local.bus.stream_info(RUNS_STREAM)).state.messages - before == 3

        await wait_until(stored)
        local.consume()
        await wait_until(lambda: _final(db, [run for run, _ in runs]), timeout=30)
        await wait_until(lambda: _drained(local.bus))
    assert (
        await db.fetchval("SELECT count(*) FROM issues WHERE origin_run_id = ANY($1)", [r for r, _ in runs])
        == 250
    )


async def test_messages_naming_many_runs_are_held_to_their_shape(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """A list with unknown runs beside real ones: the real ones are decided, the message acked. A
    list of unknown runs only, an empty list, a list past RUNS_PER_MESSAGE, ids that are not
    uuids, a list that is not a list: terminated. The consumer goes on."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    good = [await make_run(db, world, routine) for _ in range(3)]
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    bodies: list[dict[str, Any]] = [
        {"runIds": [str(good[0]), unknown[0]]},
        {"runIds": unknown[1:]},
        {"runIds": []},
        {"runIds": [str(uuid.uuid4()) for _ in range(RUNS_PER_MESSAGE + 1)]},
        {"runIds": ["not a uuid", str(good[1])]},
        {"runIds": [{"runId": str(good[1])}]},
        {"runIds": str(good[1])},
        {"runIds": [str(good[1]), str(good[2])]},
    ]
    async with _dispatcher(stack, dispatcher_db) as local:
        for n, body in enumerate(bodies):
            await local.bus.publish_acked(Subjects.RUNS_REQUESTED, body, msg_id=f"shape-{n}")
        consumer = local.consume()
        await wait_until(lambda: _final(db, good))
        await wait_until(lambda: _drained(local.bus))
        assert not consumer.done()
    assert await db.fetchval("SELECT count(*) FROM issues WHERE origin_run_id = ANY($1)", good) == 3


async def test_a_run_that_cannot_be_decided_fails_alone_in_a_message_naming_many(
    db: asyncpg.Connection, stack: Stack
) -> None:
    """One message names a run of a routine someone holds locked and a run of a free routine, each
    decided in its own chunk: the free one is decided; the other is retried with the message until
    max_deliver, then failed with the reason, and the message terminated."""
    world = await make_world(db)
    held, free = await make_routine(db, world), await make_routine(db, world)
    stuck, fine = await make_run(db, world, held), await make_run(db, world, free)
    impatient = DispatcherSettings(database_url=stack.database_url, db_lock_timeout_ms=100)
    async with (
        open_database(impatient, "test") as database,
        _dispatcher(stack, database, db_lock_timeout_ms=100, max_deliver=2, fetch_batch_size=1) as local,
        _routine_held_locked(stack, held) as release,
    ):
        await publish_runs_requested(local.bus, [(stuck, held), (fine, free)])
        local.consume()
        await wait_until(lambda: _status_is(db, stuck, "failed"), timeout=20)
        await release()
        await wait_until(lambda: _drained(local.bus))
    assert await _status_is(db, fine, "issue_created")
    reason = await db.fetchval("SELECT failure_reason FROM routine_runs WHERE id = $1", stuck)
    assert reason.startswith("dispatch failed after 2 deliveries")


async def test_a_stop_cutting_a_delivery_short_gives_its_messages_back_undecided_runs_unacked(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """SIGTERM's shutdown cancels the consumer while a chunk still waits (here on a routine someone
    holds locked), or while a later chunk waits for a slot: the message naming the run that was not
    decided is never acked (it was, and only the sweeper would have found the run); it goes back to
    the stream at once, and a dispatcher started afterwards decides it."""
    world = await make_world(db)
    held, free = await make_routine(db, world), await make_routine(db, world)
    stuck = await make_run(db, world, held)
    fine = [await make_run(db, world, free) for _ in range(2)]
    async with _routine_held_locked(stack, held) as release:
        async with _dispatcher(stack, dispatcher_db, fetch_batch_size=1, decide_concurrency=1) as local:
            supervisor = Supervisor("test")
            local.dispatcher.stopping = supervisor.stopping
            # One message, three chunks of one run; the first holds the only slot, waiting for the lock.
            await publish_runs_requested(local.bus, [(stuck, held), *[(f, free) for f in fine]])
            supervisor.spawn("consumer", local.dispatcher.consume())
            await asyncio.sleep(1.0)
            await supervisor.shutdown(timeout=0.5)  # as at SIGTERM: stop, wait a little, cancel
            assert await _status_is(db, stuck, "received")

        await release()
    # No sweeper: only the message brings the run back — within 20 s, before the 30 s ack wait.
    async with _dispatcher(stack, dispatcher_db) as local:
        local.consume()
        await wait_until(lambda: _final(db, [stuck, *fine]), timeout=20)
        await wait_until(lambda: _drained(local.bus))


async def test_a_failed_termination_of_junk_does_not_end_the_consumer(
    dispatcher_db: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terminating an unparseable message can fail (the connection's buffer is full, it is
    draining): the consumer logs it and goes on — it used to die, and the service with it."""

    async def failing_term(_msg: Msg) -> None:
        raise nats.errors.OutboundBufferLimitError

    async with _dispatcher(stack, dispatcher_db) as local:
        await local.bus.publish_acked(Subjects.RUNS_REQUESTED, {"junk": 1}, msg_id="junk")
        monkeypatch.setattr(Msg, "term", failing_term)
        consumer = local.consume()
        await asyncio.sleep(2)
        assert not consumer.done(), consumer.exception()


def test_a_fetch_asks_for_about_as_many_runs_as_the_dispatcher_decides_at_once(stack: Stack) -> None:
    """No message is acked before every run of its delivery is decided, so a delivery must stay
    well within the ack wait. 500 messages of 100 runs each would be 50,000 decisions before the
    first ack; a fetch asks for about FETCH_BATCH_SIZE × DECIDE_CONCURRENCY runs' worth, judged by
    the last delivery (until one is seen, as if each message named a hundred)."""
    settings = DispatcherSettings(database_url=stack.database_url, fetch_batch_size=500, decide_concurrency=3)
    dispatcher = Dispatcher(
        settings, Database(settings, application_name="test"), Bus(stack.nats_url, "t"), asyncio.Event()
    )
    assert dispatcher._fetch_size() == 15
    dispatcher._runs_per_message = 1.0  # the last delivery: one run per message (webhook fires)
    assert dispatcher._fetch_size() == 500
    dispatcher._runs_per_message = 40.0
    assert dispatcher._fetch_size() == 37


async def _refuse_issues_for(db: asyncpg.Connection, poison: uuid.UUID) -> None:
    """Fault injection: inserting the execution issue of `poison` fails with a non-retryable error."""
    await db.execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.origin_run_id = '{poison}' THEN RAISE EXCEPTION 'poisoned run'; END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON issues FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
    )


async def _final(db: asyncpg.Connection, runs: list[uuid.UUID]) -> bool:
    return not await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE id = ANY($1::uuid[]) AND status = 'received'", runs
    )


@pytest.mark.parametrize("loop", ["consumer", "sweeper"])
async def test_poison_run_in_a_batch_fails_alone_and_the_dispatcher_lives(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, loop: str
) -> None:
    """A run whose decision fails for a non-retryable reason is failed with the reason; the other
    runs of its batch are decided and the loop keeps running (it used to die, batch and all)."""
    world = await make_world(db)
    routines = [await make_routine(db, world, "always_enqueue") for _ in range(5)]
    runs = [await make_run(db, world, r) for r in routines]
    poison = runs[2]
    await _refuse_issues_for(db, poison)
    announced: dict[str, str] = {}

    async def collect(msg: Msg) -> None:
        for decision in json.loads(msg.data)["decisions"]:
            announced[decision["runId"]] = decision["status"]

    async with _dispatcher(stack, dispatcher_db, sweep_after_sec=0, sweep_interval_sec=0.2) as local:
        bus = local.bus
        await bus.subscribe(Subjects.RUNS_DISPATCHED, collect)
        if loop == "consumer":
            for run, routine in zip(runs, routines, strict=True):
                await publish_run_requested(bus, run, routine)
            task = local.consume()
        else:
            task = local.sweep()

        async def settled() -> bool:
            return task.done() or await _final(db, runs)

        await wait_until(settled, timeout=20)
        assert not task.done(), task.exception()
        rows = {
            r["id"]: r for r in await db.fetch("SELECT * FROM routine_runs WHERE id = ANY($1::uuid[])", runs)
        }
        assert rows[poison]["status"] == "failed"
        assert "poisoned run" in rows[poison]["failure_reason"]
        assert {rows[r]["status"] for r in runs if r != poison} == {"issue_created"}
        # The failure is announced like any decision (a manual run's waiter hears "failed").
        await wait_until(lambda: asyncio.sleep(0, announced.get(str(poison)) == "failed"))
        # Still alive: a run recorded afterwards is decided too.
        later = await make_run(db, world, routines[0])
        if loop == "consumer":
            await publish_run_requested(bus, later, routines[0])
        await wait_until(lambda: _status_is(db, later, "issue_created"), timeout=20)


async def test_poison_messages_never_stop_the_dispatcher(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """Garbage bytes, deeply nested JSON as the message, a run of a deleted routine and a run whose
    stored payload is nested far deeper than any decoder allows (written straight into Postgres,
    bypassing the edge): the messages are terminated or the runs decided, the good runs decided,
    and the consumer keeps running."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    doomed_routine = await make_routine(db, world)
    good = [await make_run(db, world, routine) for _ in range(3)]
    deep = await make_run(db, world, routine)
    await db.execute(
        "UPDATE routine_runs SET payload = ('{\"a\":' || repeat('[', 3000) || repeat(']', 3000) || '}')::jsonb"
        " WHERE id = $1",
        deep,
    )
    orphan = await make_run(db, world, doomed_routine)
    await db.execute("DELETE FROM routines WHERE id = $1", doomed_routine)
    async with _dispatcher(stack, dispatcher_db) as local:
        bus = local.bus
        await publish_raw(
            stack.nats_url,
            Subjects.RUNS_REQUESTED,
            b"\xff\xfe garbage \x00",
            b'{"runId":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        )
        await publish_run_requested(bus, good[0], routine)
        await publish_run_requested(bus, deep, routine)
        await publish_run_requested(bus, orphan, doomed_routine)
        for run in good[1:]:
            await publish_run_requested(bus, run, routine)
        consumer = local.consume()

        async def drained() -> bool:
            if consumer.done():
                return True
            if not await _final(db, [*good, deep]):
                return False  # a transient failure (busy machine) is retried: wait for it
            try:
                info = await bus.dispatcher_consumer_info()
            except nats.js.errors.NotFoundError:
                return False  # not created yet
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(drained, timeout=20)
        assert not consumer.done(), consumer.exception()
        statuses = {
            r["id"]: r["status"]
            for r in await db.fetch(
                "SELECT id, status FROM routine_runs WHERE id = ANY($1::uuid[])", [*good, deep]
            )
        }
        assert statuses == {run: "issue_created" for run in [*good, deep]}
        # The deep payload went onto its issue unchanged, without a round trip through a decoder.
        assert await db.fetchval(
            "SELECT i.payload = r.payload FROM issues i JOIN routine_runs r ON r.id = i.origin_run_id"
            " WHERE r.id = $1",
            deep,
        )


async def test_dispatcher_http_names_no_software_versions(stack: Stack) -> None:
    """The banner fix lives in the shared app skeleton, so every service has it (here: dispatcher)."""
    from aiohttp.test_utils import TestClient

    from routines_dispatcher.app import create_app

    app = create_app(DispatcherSettings(database_url=stack.database_url, nats_url=stack.nats_url))
    async with TestClient(served(app)) as client:
        for path in ("/healthz", "/metrics", "/nope"):
            resp = await client.get(path)
            assert "aiohttp" not in resp.headers.get("Server", ""), path


async def _many_runs(db: asyncpg.Connection, world: Any, routine: uuid.UUID, n: int) -> list[uuid.UUID]:
    rows = await db.fetch(
        "INSERT INTO routine_runs (routine_id, company_id, source) SELECT $1, $2, 'webhook'"
        " FROM generate_series(1, $3) RETURNING id",
        routine,
        world.company_id,
        n,
    )
    return [r["id"] for r in rows]


async def _transactions(db: asyncpg.Connection, runs: list[uuid.UUID]) -> int:
    """How many transactions decided these runs (the runs of one share its now())."""
    return int(
        await db.fetchval(
            "SELECT count(DISTINCT decided_at) FROM routine_runs WHERE id = ANY($1::uuid[])", runs
        )
    )


async def test_a_stream_of_runs_is_decided_in_few_large_transactions(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """Runs streaming in faster than FETCH_LINGER_ABOVE_PER_SEC are gathered for FETCH_LINGER_MS
    before each fetch: 3,000 runs announced 20 to a message every 10 ms (1.5 s) are decided in a
    handful of transactions, not one per message or two (about 150 without the wait)."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    runs = await _many_runs(db, world, routine, 3000)
    settings = {"fetch_linger_ms": 200, "fetch_linger_above_per_sec": 100}
    async with _dispatcher(stack, dispatcher_db, **settings) as local:
        local.consume()
        started = time.monotonic()
        for start in range(0, len(runs), 20):
            await publish_runs_requested(local.bus, [(run, routine) for run in runs[start : start + 20]])
            await asyncio.sleep(0.01)
        streamed = time.monotonic() - started
        await wait_until(lambda: _final(db, runs), timeout=30)
    assert await db.fetchval("SELECT coalesced_fire_count FROM issues WHERE origin_id = $1", routine) == 2999
    # A few transactions until 100 runs showed a stream, then one per 0.2 s of it (about 1.5 s; more
    # on a loaded machine, whose sleeps overshoot). Without the wait: one per message or two.
    assert await _transactions(db, runs) <= 8 + streamed / 0.2


async def test_a_quiet_stream_is_decided_at_once_despite_a_long_linger(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait is for streams: runs arriving slower than FETCH_LINGER_ABOVE_PER_SEC are decided as
    they come, however long FETCH_LINGER_MS is. (Every wait before a fetch is recorded: timing the
    decisions against the one-second linger left a busy host 0.2 s of margin.)"""
    lingered: list[float] = []
    linger = Dispatcher._linger

    def recorded(self: Dispatcher) -> float:
        lingered.append(linger(self))
        return lingered[-1]

    monkeypatch.setattr(Dispatcher, "_linger", recorded)
    world = await make_world(db)
    routine = await make_routine(db, world)
    runs = await _many_runs(db, world, routine, 3)
    settings = {"fetch_linger_ms": 1000, "fetch_linger_above_per_sec": 100}
    async with _dispatcher(stack, dispatcher_db, **settings) as local:
        local.consume()
        for run in runs:
            await publish_run_requested(local.bus, run, routine)
            await wait_until(functools.partial(_final, db, [run]), timeout=10)
    assert lingered and set(lingered) == {0.0}, lingered


async def test_a_backlog_is_decided_without_waiting_for_more(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """A fetch that comes back full means more is already waiting: a backlog (the dispatcher was
    down, NATS held the messages) is decided fetch after fetch, with no wait between them."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    runs = await _many_runs(db, world, routine, 600)
    settings = {"fetch_linger_ms": 1000, "fetch_linger_above_per_sec": 10, "fetch_batch_size": 25}
    async with _dispatcher(stack, dispatcher_db, **settings) as local:
        for run in runs:  # one message each: 24 full fetches of 25
            await publish_run_requested(local.bus, run, routine)
        await local.bus.flush()
        started = time.monotonic()
        local.consume()
        await wait_until(lambda: _final(db, runs), timeout=30)
        elapsed = time.monotonic() - started
    # Waiting 1 s before every fetch (or every other one) would take over 10 s.
    assert elapsed < 8, elapsed  # (every other fetch lingering: 12 s)


async def test_fires_coalesced_in_one_transaction_wake_the_agent_once_per_issue(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """Fires coalesced into an open issue by one transaction are one wake-up per issue (at most 100
    runs each, named in `runIds`, the last also `runId`), not one per fire: a hot routine would
    otherwise wake its agent thousands of times a second about the same issue. The issues a
    routine creates together are one wake-up too (see the next test). Every decided run is named
    by exactly one wake-up."""
    world = await make_world(db)
    hot = await make_routine(db, world)
    warm = await make_routine(db, world)
    enqueue = await make_routine(db, world, "always_enqueue")
    runs = {
        hot: await _many_runs(db, world, hot, 231),
        warm: await _many_runs(db, world, warm, 4),
        enqueue: await _many_runs(db, world, enqueue, 3),
    }
    woken: list[dict[str, Any]] = []

    async def on_wakeup(msg: Msg) -> None:
        woken.append(json.loads(msg.data))

    async with _dispatcher(stack, dispatcher_db) as local:
        await local.bus.subscribe(f"agents.{world.agent_id}.wakeup", on_wakeup)
        decisions = await local.dispatcher.decide_and_publish(
            [run for ids in runs.values() for run in ids], skip_locked=False
        )
        assert len(decisions) == 238
        await wait_until(lambda: len(woken) >= 7, timeout=5)
        await local.bus.flush()
    issues = {
        r["origin_id"]: r["id"]
        for r in await db.fetch(
            "SELECT id, origin_id FROM issues WHERE origin_id = ANY($1::uuid[])", list(runs)
        )
    }
    for w in woken:  # what the API's OpenAPI document says a wake-up is
        WakeupEvent.model_validate(w)
    created = [w for w in woken if w["reason"] == "issue_created"]
    coalesced = [w for w in woken if w["reason"] == "run_coalesced"]
    assert sorted(len(w["runIds"]) for w in created) == [1, 1, 3]
    assert all(w["runId"] == w["runIds"][-1] for w in created)
    by_issue: dict[str, list[int]] = {}
    for w in coalesced:
        assert w["runId"] == w["runIds"][-1]
        by_issue.setdefault(w["issueId"], []).append(len(w["runIds"]))
    assert by_issue == {str(issues[hot]): [100, 100, 30], str(issues[warm]): [3]}
    named = [run for w in woken for run in w["runIds"]]
    assert sorted(named) == sorted(str(run) for ids in runs.values() for run in ids)


async def test_issues_created_together_wake_their_agent_once_a_hundred(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """An always_enqueue routine fired 231 times in one transaction creates 231 issues and wakes
    its agent three times, not 231: the issues a routine creates one after the other for one agent
    are one wake-up (at most 100, `issueIds` one per run of `runIds`, the last also `issueId` and
    `runId`). A run sent to another agent in the middle wakes that agent and ends the group, and so
    do fires coalesced for the same agent by another routine (the agent hears of the issues created
    before them first); another routine's creations do not. Wake-ups come in the order the runs
    they name were decided."""
    world = await make_world(db)
    other = await db.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'other') RETURNING id", world.company_id
    )
    enqueue = await make_routine(db, world, "always_enqueue")
    coalesce = await make_routine(db, world)
    start = await db.fetchval("SELECT now()")

    async def run_at(routine: uuid.UUID, ms: float) -> uuid.UUID:
        return uuid.UUID(
            str(
                await db.fetchval(
                    "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
                    " VALUES ($1, $2, 'webhook', $3) RETURNING id",
                    routine,
                    world.company_id,
                    start + timedelta(milliseconds=ms),
                )
            )
        )

    enqueued = [await run_at(enqueue, k) for k in range(231)]
    elsewhere = enqueued[150]
    await db.execute("UPDATE routine_runs SET assignee_override = $2 WHERE id = $1", elsewhere, other)
    coalesced = [await run_at(coalesce, k + 0.5) for k in range(10)]  # between the first ten
    woken: list[tuple[str, dict[str, Any]]] = []

    async def on_wakeup(msg: Msg) -> None:
        woken.append((msg.subject, json.loads(msg.data)))

    async with _dispatcher(stack, dispatcher_db) as local:
        await local.bus.subscribe("agents.*.wakeup", on_wakeup)
        decisions = await local.dispatcher.decide_and_publish(enqueued + coalesced, skip_locked=False)
        assert len(decisions) == 241
        await wait_until(lambda: len(woken) >= 7, timeout=5)
        await local.bus.flush()
    issue_of = {
        str(r["id"]): str(r["linked_issue_id"])
        for r in await db.fetch(
            "SELECT id, linked_issue_id FROM routine_runs WHERE id = ANY($1::uuid[])", enqueued + coalesced
        )
    }
    for _, w in woken:  # what the API's OpenAPI document says a wake-up is
        WakeupEvent.model_validate(w)
    mine, theirs = f"agents.{world.agent_id}.wakeup", f"agents.{other}.wakeup"
    # The coalescing routine's first run (0.5 ms) creates its issue, its second (1.5 ms) ends that
    # group; its fires (1.5-9.5 ms) go out after the ten issues created for the agent before them.
    assert [(subject, w["routineId"], w["reason"], len(w["runIds"])) for subject, w in woken] == [
        (mine, str(coalesce), "issue_created", 1),
        (mine, str(enqueue), "issue_created", 10),
        (mine, str(coalesce), "run_coalesced", 9),
        (mine, str(enqueue), "issue_created", 100),
        (mine, str(enqueue), "issue_created", 40),
        (theirs, str(enqueue), "issue_created", 1),
        (mine, str(enqueue), "issue_created", 80),
    ]
    of_enqueue = [(subject, w) for subject, w in woken if w["routineId"] == str(enqueue)]
    assert [run for _, w in of_enqueue for run in w["runIds"]] == [str(r) for r in enqueued]
    for _, w in of_enqueue:
        assert w["issueIds"] == [issue_of[run] for run in w["runIds"]]
        assert (w["runId"], w["issueId"]) == (w["runIds"][-1], w["issueIds"][-1])
    assert [
        (subject, w["reason"], w["runIds"]) for subject, w in woken if w["routineId"] == str(coalesce)
    ] == [
        (mine, "issue_created", [str(coalesced[0])]),
        (mine, "run_coalesced", [str(r) for r in coalesced[1:]]),
    ]


async def test_wakeups_follow_the_decisions_when_a_stale_issue_is_replaced_mid_transaction(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """One transaction: the first fire is coalesced into the open issue, the second finds it
    stale (open longer than staleAfterSec), cancels it and creates a new one, the third is
    coalesced into the new one. The agent hears of them in that order, and never of the cancelled
    issue after its successor (grouping coalesced fires once put every creation first)."""
    world = await make_world(db)
    routine = await make_routine(db, world, stale_after_sec=60, stale_action="cancel")
    old = await make_issue(db, world, routine, "todo")
    opened = await db.fetchval(
        "UPDATE issues SET created_at = now() - interval '10 minutes' WHERE id = $1 RETURNING created_at", old
    )
    runs = [
        await db.fetchval(
            "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
            " VALUES ($1, $2, 'webhook', $3) RETURNING id",
            routine,
            world.company_id,
            opened + timedelta(seconds=after),
        )
        for after in (10, 100, 101)
    ]
    woken: list[dict[str, Any]] = []

    async def on_wakeup(msg: Msg) -> None:
        woken.append(json.loads(msg.data))

    async with _dispatcher(stack, dispatcher_db) as local:
        await local.bus.subscribe(f"agents.{world.agent_id}.wakeup", on_wakeup)
        await local.dispatcher.decide_and_publish(runs, skip_locked=False)
        await wait_until(lambda: len(woken) >= 3, timeout=5)
        await local.bus.flush()
    new = await db.fetchval("SELECT id FROM issues WHERE origin_run_id = $1", runs[1])
    assert await db.fetchval("SELECT status FROM issues WHERE id = $1", old) == "cancelled"
    assert [(w["reason"], w["issueId"], w["runIds"]) for w in woken] == [
        ("run_coalesced", str(old), [str(runs[0])]),
        ("issue_created", str(new), [str(runs[1])]),
        ("run_coalesced", str(new), [str(runs[2])]),
    ]


async def test_execution_issues_get_ids_in_the_order_they_were_created(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    """Issue ids are UUIDv7, like run ids: an always_enqueue routine creates one per fire, and the
    primary key grows at one end instead of at random pages."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    runs = []
    for _ in range(3):
        runs.append(await make_run(db, world, routine))
        await decide(dispatcher_db, runs[-1:])
        await asyncio.sleep(0.002)
    ids = [await db.fetchval("SELECT id FROM issues WHERE origin_run_id = $1", run) for run in runs]
    assert [i.version for i in ids] == [7, 7, 7]
    assert ids == sorted(ids)


async def test_an_issue_of_a_routine_without_variables_says_what_the_routine_says(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    """The title and description of a routine without variables are taken as they are (in SQL, not
    sent again with every run), a missing description stays missing; one with variables is
    rendered per run."""
    world = await make_world(db)
    plain = await make_routine(db, world, "always_enqueue", title="Triage", description="Look at **it**")
    bare = await make_routine(db, world, "always_enqueue", title="Bare")
    templated = await make_routine(
        db,
        world,
        "always_enqueue",
        title="Deploy {{env}}",
        description="To {{env}}",
        variables=[{"name": "env", "type": "text", "default": "staging"}],
    )
    runs = [await make_run(db, world, r) for r in (plain, plain, bare, templated)]
    await decide(dispatcher_db, runs)
    got = sorted(
        (r["title"], r["description"])
        for r in await db.fetch(
            "SELECT title, description FROM issues WHERE origin_run_id = ANY($1::uuid[])", runs
        )
    )
    assert got == [
        ("Bare", None),
        ("Deploy «staging»", "To «staging»"),
        ("Triage", "Look at **it**"),
        ("Triage", "Look at **it**"),
    ]


async def test_the_agent_woken_is_the_one_the_issue_is_assigned_to(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """A manual run sent to another agent (`assigneeOverride`) files its issue with that agent, and
    wakes that agent, not the routine's. Fires coalesced into an open issue wake whoever the issue
    is assigned to now (an operator may have reassigned it)."""
    world = await make_world(db)
    other = await db.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'other') RETURNING id", world.company_id
    )
    third = await db.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'third') RETURNING id", world.company_id
    )
    routine = await make_routine(db, world)
    sent_elsewhere = await make_run(db, world, routine, "manual")
    await db.execute("UPDATE routine_runs SET assignee_override = $2 WHERE id = $1", sent_elsewhere, other)
    woken: list[tuple[str, dict[str, Any]]] = []

    async def on_wakeup(msg: Msg) -> None:
        woken.append((msg.subject, json.loads(msg.data)))

    async with _dispatcher(stack, dispatcher_db) as local:
        await local.bus.subscribe("agents.*.wakeup", on_wakeup)
        await local.dispatcher.decide_and_publish([sent_elsewhere], skip_locked=False)
        issue = await db.fetchval("SELECT id FROM issues WHERE origin_run_id = $1", sent_elsewhere)
        await db.execute("UPDATE issues SET assignee_agent_id = $2 WHERE id = $1", issue, third)
        fire = await make_run(db, world, routine, "webhook")
        await local.dispatcher.decide_and_publish([fire], skip_locked=False)
        await wait_until(lambda: len(woken) >= 2, timeout=5)
        await local.bus.flush()
    assert [(subject, w["reason"], w["runId"]) for subject, w in woken] == [
        (f"agents.{other}.wakeup", "issue_created", str(sent_elsewhere)),
        (f"agents.{third}.wakeup", "run_coalesced", str(fire)),
    ]
