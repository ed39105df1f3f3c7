"""The dispatcher's two loops: the JetStream pull consumer and the Postgres sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from routines_dispatcher.decide import Decision, decide_runs, fail_run, publish_decisions
from routines_dispatcher.metrics import (
    DECISION_LATENCY,
    REDELIVERIES,
    RUNS_DECIDED,
    SWEEPER_PICKUPS,
    TERMINATED,
    observe_many,
)
from routines_dispatcher.policy import Outcome
from routines_dispatcher.sql import QUERIES
from shared.alerts import AlertEvent, evaluate_failure_alerts, publish_alerts
from shared.bus import Bus, decode, message_context
from shared.db import RETRYABLE_ERRORS, Database
from shared.ids import parse_id
from shared.lifecycle import run_every, sleep_unless_stopped
from shared.logging import get_logger
from shared.runs import RUNS_PER_MESSAGE
from shared.settings import DispatcherSettings

log = get_logger(__name__)


def _observe(decisions: Sequence[Decision]) -> None:
    for status, count in Counter(d.status for d in decisions).items():
        RUNS_DECIDED.labels(status.value).inc(count)
    now = datetime.now(UTC)
    observe_many(DECISION_LATENCY, [max(0.0, (now - d.triggered_at).total_seconds()) for d in decisions])


SWEEP_FROM_THE_OLDEST = (datetime.min.replace(tzinfo=UTC), 0)
SWEEP_BATCHES = 500
SWEEP_RUNS = 1000
"""A sweep looks at up to SWEEP_BATCHES batches of recorded runs, about SWEEP_RUNS runs' worth
(each batch names the runs of one INSERT: a manual run, a gateway group commit, a scheduler tick
of up to `claim_batch_size` slots; one batch always, however large)."""

MAX_MESSAGE_BYTES = 8 * 1024
"""A run-requested message names one run (`{"runId": ...}`) or up to RUNS_PER_MESSAGE
(`{"runIds": [...]}`, ~40 bytes each); anything far larger is junk."""


def _run_ids(msg: Msg) -> list[uuid.UUID] | None:
    """The runs a message asks to decide, or None for anything that is not such a message (never
    raises: garbage, deep nesting and wrong types are all just 'unparseable')."""
    if len(msg.data) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = decode(msg.data)
        if not isinstance(data, dict):
            return None
        if "runIds" not in data:
            return [parse_id(str(data["runId"]))]
        ids = data["runIds"]
        if not isinstance(ids, list) or not 0 < len(ids) <= RUNS_PER_MESSAGE:
            return None
        return [parse_id(str(run_id)) for run_id in ids]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


@dataclass(eq=False)
class _Delivery:
    """One fetch: its messages, the runs they name, and what became of those runs. Its runs are
    decided in chunks (one transaction each, concurrently); once every chunk is done, each message
    is acked, terminated or retried by what became of its runs."""

    messages: list[tuple[Msg, list[uuid.UUID]]]
    pending: int = 0  # chunks not done yet
    failed: dict[uuid.UUID, BaseException] = field(default_factory=dict)  # retryably, by run
    missing: set[uuid.UUID] = field(default_factory=set)  # no such run
    # Settle nothing: an unexpected error (its messages come back after the ack wait) or a stop
    # (they were given back at once).
    abandoned: bool = False

    def chunks(self, size: int) -> list[list[uuid.UUID]]:
        runs = list(dict.fromkeys(run_id for _, ids in self.messages for run_id in ids))
        return [runs[start : start + size] for start in range(0, len(runs), size)]


def _reason(exc: BaseException) -> str:
    return f"cannot be decided: {type(exc).__name__}: {exc}"


async def _unsubscribe(subscription: JetStreamContext.PullSubscription | None) -> None:
    """A pull subscription never drains (nothing marks its queue done): unsubscribe it, so the
    connection's drain at shutdown neither waits for it nor ends in a cancelled gather logged as
    "exception was never retrieved"."""
    if subscription is not None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await subscription.unsubscribe()


class ArrivalRate:
    """Runs fetched over the last `window` seconds. Trimmed on every call, so it holds at most a
    window's worth of fetches whether or not anyone asks for the rate (the linger may be off)."""

    def __init__(self, window: float = 1.0) -> None:
        self._window = window
        self._fetches: deque[tuple[float, int]] = deque()  # (when, runs)
        self._runs = 0

    def add(self, runs: int, now: float) -> None:
        self._fetches.append((now, runs))
        self._runs += runs
        self._trim(now)

    def runs(self, now: float) -> int:
        """Runs fetched within the window ending at `now`."""
        self._trim(now)
        return self._runs

    def __len__(self) -> int:
        return len(self._fetches)

    def _trim(self, now: float) -> None:
        horizon = now - self._window
        while self._fetches and self._fetches[0][0] < horizon:
            self._runs -= self._fetches.popleft()[1]


@dataclass(eq=False)
class Dispatcher:
    """Turns recorded runs into decisions; any number of replicas may run."""

    settings: DispatcherSettings
    db: Database
    bus: Bus
    stopping: asyncio.Event
    _runs_per_message: float = field(default=float(RUNS_PER_MESSAGE), init=False)
    _arrivals: ArrivalRate = field(default_factory=ArrivalRate, init=False)
    _last_fetch_full: bool = field(default=False, init=False)
    # Where a sweep goes on (the last batch the one before looked at), or from the oldest: None;
    # and when the sweeps that followed on from each other began (monotonic seconds).
    _sweep_cursor: tuple[datetime, int] | None = field(default=None, init=False)
    _sweep_chain_began: float = field(default=0.0, init=False)

    async def decide_and_publish(self, run_ids: Sequence[uuid.UUID], *, skip_locked: bool) -> list[Decision]:
        """Decide the runs in one transaction. If that fails for a reason that retrying cannot cure,
        decide them one by one instead, so only the run that cannot be decided fails (with the
        reason) and the rest of the batch goes through. Retryable errors propagate."""
        try:
            async with self.db.transaction() as conn:
                decisions = await decide_runs(conn, run_ids, skip_locked=skip_locked)
                # Only failures can start an alert or an auto-pause (recoveries come from the API).
                failing = {d.routine_id for d in decisions if d.status is Outcome.FAILED or d.stale_cancelled}
                alerts = await evaluate_failure_alerts(conn, failing)
        except RETRYABLE_ERRORS:
            raise
        except Exception as exc:  # any other failure is the data's, not ours
            if len(run_ids) > 1:
                log.warning("batch decision failed; deciding its runs one by one", error=repr(exc))
                decided: list[Decision] = []
                for run_id in run_ids:
                    decided += await self.decide_and_publish([run_id], skip_locked=skip_locked)
                return decided
            decisions, alerts = await self._fail_poison(run_ids[0], exc)
        _observe(decisions)
        await publish_decisions(self.bus, decisions)
        await publish_alerts(self.bus, alerts)
        return decisions

    async def _fail_poison(
        self, run_id: uuid.UUID, exc: BaseException
    ) -> tuple[list[Decision], list[AlertEvent]]:
        log.error("run cannot be decided; marked failed", run_id=str(run_id), error=repr(exc)[:500])
        TERMINATED.labels("undecidable_run").inc()
        async with self.db.transaction() as conn:
            failed = await fail_run(conn, run_id, _reason(exc))
            # A failure like any other: it counts toward the routine's failure alert.
            alerts = await evaluate_failure_alerts(conn, [failed.routine_id]) if failed else []
        return ([failed] if failed is not None else []), alerts

    async def consume(self) -> None:
        """Fetch deliveries from the durable pull consumer until told to stop, deciding up to
        `decide_concurrency` chunks of runs at once (a chunk: up to `fetch_batch_size` runs, one
        transaction): while one waits for Postgres (locks, commit), the next is decided. Chunks are
        as independent as those of two replicas: each locks its routines in id order, so they
        serialise on shared routines, never deadlock. As with two replicas, runs of one routine in
        two chunks may be decided out of stream order (the later run may create the issue the
        earlier one coalesces into)."""
        subscription: JetStreamContext.PullSubscription | None = None
        slots = asyncio.Semaphore(self.settings.decide_concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping.is_set():
                # A slot first, then the fetch: fetched messages are never left waiting unacked
                # (their ack wait running) behind chunks still being decided.
                await slots.acquire()
                try:
                    if linger := self._linger():
                        await sleep_unless_stopped(self.stopping, linger)
                    subscription, messages = await self._fetch(subscription)
                except BaseException:
                    slots.release()
                    raise
                delivery = await self._parse(messages)
                chunks = delivery.chunks(self.settings.fetch_batch_size)
                if not chunks:
                    slots.release()
                    continue
                delivery.pending = len(chunks)
                launched = 0
                try:
                    for n, chunk in enumerate(chunks):
                        if n:
                            await slots.acquire()
                        task = asyncio.create_task(self._decide_chunk_in_slot(delivery, chunk, slots))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        launched += 1
                except BaseException:  # cancelled waiting for a slot (stopping)
                    delivery.pending -= len(chunks) - launched
                    await self._give_back(delivery)
                    raise
        finally:
            try:
                if in_flight:  # chunks being decided finish (and ack) before the subscription goes
                    await asyncio.gather(*in_flight, return_exceptions=True)
            finally:  # also when cancelled while waiting for them
                await _unsubscribe(subscription)

    def _linger(self) -> float:
        """Seconds to wait before the next fetch. Under a stream of runs, a fetch made at once
        brings the few that arrived during the last decision, and every transaction's fixed costs
        (its statements and commit, the fetch, the acks) are paid for a handful of runs: while runs
        arrive faster than `fetch_linger_above_per_sec`, waiting `fetch_linger_ms` lets one
        transaction decide what arrives meanwhile (as Postgres' commit_delay does for commits, and
        only under load, like it). A quiet stream is decided at once; so is a backlog (the last
        fetch came back full: more is already waiting)."""
        if not self.settings.fetch_linger_ms or self._last_fetch_full:
            return 0.0
        streaming = self._arrivals.runs(time.monotonic()) > self.settings.fetch_linger_above_per_sec
        return self.settings.fetch_linger_ms / 1000 if streaming else 0.0

    def _fetch_size(self) -> int:
        """Messages to ask for: about `decide_concurrency` chunks' worth of runs, judged by the last
        delivery (until one is seen, as if every message named RUNS_PER_MESSAGE runs). No message
        is acked before every run of its delivery is decided, so a delivery must stay well within
        the ack wait: 500 messages of 100 runs each would be 50,000 decisions."""
        runs = self.settings.fetch_batch_size * self.settings.decide_concurrency
        return max(1, min(self.settings.fetch_batch_size, int(runs / self._runs_per_message)))

    async def _fetch(
        self, subscription: JetStreamContext.PullSubscription | None
    ) -> tuple[JetStreamContext.PullSubscription | None, list[Msg]]:
        """The next batch (none when stopping or nothing came within a second), binding the
        subscription first when there is none; a failed one is dropped to be bound again."""
        if self.stopping.is_set():
            return subscription, []
        try:
            if subscription is None:
                await self.bus.wait_connected()
                subscription = await self.bus.bind_dispatcher_consumer(self.settings.max_deliver)
            size = self._fetch_size()
            messages = await subscription.fetch(size, timeout=1.0)
            self._last_fetch_full = len(messages) >= size
            return subscription, messages
        except nats.errors.TimeoutError:
            self._last_fetch_full = False
            return subscription, []
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            if not self.stopping.is_set():
                log.warning("fetch failed; retrying", error=repr(exc))
            await _unsubscribe(subscription)
            await sleep_unless_stopped(self.stopping, 1.0)
            return None, []

    async def _parse(self, messages: Sequence[Msg]) -> _Delivery:
        """The runs each message names; a message that names none is terminated."""
        delivery = _Delivery([])
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                REDELIVERIES.inc()
            run_ids = _run_ids(msg)
            if run_ids is None:
                TERMINATED.labels("unparseable").inc()
                log.warning("unparseable message terminated", subject=msg.subject)
                try:
                    await msg.term()
                except (nats.errors.Error, OSError) as exc:  # it comes back, and is terminated then
                    log.warning("terminating a message failed", error=repr(exc))
            else:
                delivery.messages.append((msg, run_ids))
        if messages:
            runs = sum(len(ids) for _, ids in delivery.messages)
            self._runs_per_message = max(1.0, runs / len(messages))
            self._arrivals.add(runs, time.monotonic())
        return delivery

    async def _decide_chunk_in_slot(
        self, delivery: _Delivery, run_ids: list[uuid.UUID], slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._decide_chunk(delivery, run_ids)
        except asyncio.CancelledError:  # rolled back: its messages must come back, never be acked
            await self._give_back(delivery)
            raise
        except Exception:  # one bad chunk never ends the loop
            # Unacked messages come back after the ack wait; their runs are also in Postgres.
            log.exception("deciding runs failed; their messages will be redelivered")
            delivery.abandoned = True
            await sleep_unless_stopped(self.stopping, 1.0)
        finally:
            delivery.pending -= 1
            try:
                if delivery.pending == 0:
                    await self._settle(delivery)
            finally:
                slots.release()

    async def _decide_chunk(self, delivery: _Delivery, run_ids: list[uuid.UUID]) -> None:
        """Decide a chunk in one transaction; what cannot be decided is noted on the delivery."""
        try:
            with message_context(delivery.messages[0][0]):
                decisions = await self.decide_and_publish(run_ids, skip_locked=False)
            undecided = set(run_ids) - {d.run_id for d in decisions}
            if undecided:  # already decided (redelivery), or no such run at all
                async with self.db.connection() as conn:
                    rows = await conn.fetch(QUERIES["missing_runs"], list(undecided))
                delivery.missing.update(r["id"] for r in rows)
        except RETRYABLE_ERRORS as exc:
            log.warning("decision failed; will retry", error=repr(exc), runs=len(run_ids))
            delivery.failed.update(dict.fromkeys(run_ids, exc))

    async def _give_back(self, delivery: _Delivery) -> None:
        """A delivery cut short because the process stops: its messages go back to the stream at
        once, for another replica (runs decided meanwhile stay decided; acked when they return)."""
        if delivery.abandoned:
            return
        delivery.abandoned = True
        for msg, _ in delivery.messages:
            with contextlib.suppress(nats.errors.Error, OSError):
                await msg.nak()

    async def _settle(self, delivery: _Delivery) -> None:
        """Every chunk done: ack each message whose runs are decided; retry one whose runs failed
        for a passing reason; terminate one that names only runs that do not exist."""
        if delivery.abandoned:
            return
        for msg, run_ids in delivery.messages:
            failed = [run_id for run_id in run_ids if run_id in delivery.failed]
            if failed:
                await self._retry_later(msg, failed, delivery.failed[failed[0]])
            elif all(run_id in delivery.missing for run_id in run_ids):
                TERMINATED.labels("run_not_found").inc()
                log.warning("message for unknown runs terminated", run_ids=[str(r) for r in run_ids[:5]])
                await msg.term()
            else:
                await msg.ack()

    async def _retry_later(self, msg: Msg, run_ids: list[uuid.UUID], exc: BaseException) -> None:
        """Nak a message whose runs could not be decided for now; at its last delivery, fail them."""
        delivered = msg.metadata.num_delivered
        if delivered < self.settings.max_deliver:
            await msg.nak(delay=min(0.5 * 2 ** (delivered - 1), 15.0))
            return
        reason = f"dispatch failed after {delivered} deliveries: {type(exc).__name__}"
        failed: list[Decision] = []
        for n, run_id in enumerate(run_ids):
            try:
                async with self.db.connection() as conn:
                    decision = await fail_run(conn, run_id, reason)
            except RETRYABLE_ERRORS:  # Postgres is away: do not wait on it once per run
                log.error("runs left for the sweeper", run_ids=[str(r) for r in run_ids[n : n + 5]])
                break
            if decision is not None:
                failed.append(decision)
        await msg.term()
        if failed:  # announced like any decision (manual-run waiters)
            _observe(failed)
            await publish_decisions(self.bus, failed)

    async def sweep(self) -> None:
        """Decide runs still `received` some seconds after they were recorded, straight from Postgres."""
        await run_every(
            self.settings.sweep_interval_sec,
            self._sweep_once,
            self.stopping,
            failed="sweep failed; will retry",
            # The sweeper is the outbox's last resort: never stop it.
            unexpected="sweep failed unexpectedly; will retry",
        )

    async def _sweep_once(self) -> float | None:
        """One sweep of the batches that recorded runs `sweep_after_sec` ago or more, about
        SWEEP_RUNS runs' worth: those whose runs are all decided are deleted; the runs still
        undecided are decided (skipping those another transaction holds: a later sweep sees them),
        and the batches they settle are deleted too. 0 (sweep again at once, past these batches)
        when there may be more."""
        now = time.monotonic()
        if (
            self._sweep_cursor is not None
            and now - self._sweep_chain_began > self.settings.sweep_interval_sec
        ):
            # From the oldest again now and then, even while every sweep is full (a backlog): a
            # batch committed late, behind the cursor (its time is its transaction's start), is
            # not left until the backlog is gone.
            self._sweep_cursor = None
        if self._sweep_cursor is None:
            self._sweep_chain_began = now
        async with self.db.connection() as conn:
            batches = await conn.fetch(
                QUERIES["sweep_received_batches"],
                self.settings.sweep_after_sec,
                SWEEP_BATCHES,
                SWEEP_RUNS,
                *(self._sweep_cursor or SWEEP_FROM_THE_OLDEST),
            )
        run_ids = list(dict.fromkeys(run_id for batch in batches for run_id in batch["run_ids"]))
        size = self.settings.fetch_batch_size
        decided: set[uuid.UUID] = set()
        for start in range(0, len(run_ids), size):
            decisions = await self.decide_and_publish(run_ids[start : start + size], skip_locked=True)
            decided.update(d.run_id for d in decisions)
        if decided:
            SWEEPER_PICKUPS.inc(len(decided))
            log.info("sweeper decided runs", count=len(decided))
            settled = [b["id"] for b in batches if b["run_ids"] and decided.issuperset(b["run_ids"])]
            if settled:
                async with self.db.connection() as conn:
                    await conn.execute(QUERIES["delete_received_batches"], settled)
        if batches and (len(batches) == SWEEP_BATCHES or sum(b["size"] for b in batches) >= SWEEP_RUNS):
            self._sweep_cursor = (batches[-1]["recorded_at"], batches[-1]["id"])
            return 0.0
        self._sweep_cursor = None
        return None
