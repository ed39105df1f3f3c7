"""The dispatcher's two loops: the JetStream pull consumer and the Postgres sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from routines_dispatcher.decide import QUERIES, Decision, decide_runs, fail_run, publish_decisions
from routines_dispatcher.metrics import (
    DECISION_LATENCY,
    REDELIVERIES,
    RUNS_DECIDED,
    SWEEPER_PICKUPS,
    TERMINATED,
)
from shared.bus import DISPATCHER_CONSUMER, RUNS_STREAM, Bus, bind_message_context, decode
from shared.db import RETRYABLE_ERRORS, Database
from shared.lifecycle import sleep_unless_stopped
from shared.logging import get_logger
from shared.settings import DispatcherSettings

log = get_logger(__name__)


def _observe(decisions: Sequence[Decision]) -> None:
    now = datetime.now(UTC)
    for d in decisions:
        RUNS_DECIDED.labels(d.status.value).inc()
        DECISION_LATENCY.observe(max(0.0, (now - d.triggered_at).total_seconds()))


def _run_id(msg: Msg) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(decode(msg.data)["runId"]))
    except (ValueError, KeyError, TypeError):
        return None


async def _unsubscribe(subscription: JetStreamContext.PullSubscription | None) -> None:
    """A pull subscription never drains (nothing marks its queue done): unsubscribe it, so the
    connection's drain at shutdown neither waits for it nor ends in a cancelled gather logged as
    "exception was never retrieved"."""
    if subscription is not None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await subscription.unsubscribe()


class Dispatcher:
    """Turns recorded runs into decisions; any number of replicas may run."""

    def __init__(self, settings: DispatcherSettings, db: Database, bus: Bus, stopping: asyncio.Event) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.stopping = stopping

    async def decide_and_publish(self, run_ids: Sequence[uuid.UUID], *, skip_locked: bool) -> list[Decision]:
        async with self.db.transaction() as conn:
            decisions = await decide_runs(conn, run_ids, skip_locked=skip_locked)
        _observe(decisions)
        await publish_decisions(self.bus, decisions)
        return decisions

    async def consume(self) -> None:
        """Fetch batches from the durable pull consumer until told to stop."""
        subscription: JetStreamContext.PullSubscription | None = None
        try:
            while not self.stopping.is_set():
                try:
                    if subscription is None:
                        await self.bus.wait_connected()
                        await self.bus.ensure_dispatcher_consumer(self.settings.max_deliver)
                        subscription = await self.bus.js.pull_subscribe_bind(
                            durable=DISPATCHER_CONSUMER, stream=RUNS_STREAM
                        )
                    messages = await subscription.fetch(self.settings.fetch_batch_size, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    if not self.stopping.is_set():
                        log.warning("fetch failed; retrying", error=repr(exc))
                    await _unsubscribe(subscription)
                    subscription = None
                    await sleep_unless_stopped(self.stopping, 1.0)
                    continue
                await self.handle_batch(messages)
        finally:
            await _unsubscribe(subscription)

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Decide a batch in one transaction; ack after commit, nak on transient failure."""
        by_run: dict[uuid.UUID, list[Msg]] = {}
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                REDELIVERIES.inc()
            run_id = _run_id(msg)
            if run_id is None:
                TERMINATED.labels("unparseable").inc()
                log.warning("unparseable message terminated", subject=msg.subject)
                await msg.term()
                continue
            by_run.setdefault(run_id, []).append(msg)
        if not by_run:
            return
        if messages:
            bind_message_context(messages[0])
        try:
            decisions = await self.decide_and_publish(list(by_run), skip_locked=False)
            undecided = set(by_run) - {d.run_id for d in decisions}
            missing: set[uuid.UUID] = set()
            if undecided:  # already decided (redelivery), or no such run at all
                async with self.db.connection() as conn:
                    missing = {r["id"] for r in await conn.fetch(QUERIES["missing_runs"], list(undecided))}
        except RETRYABLE_ERRORS as exc:
            await self._retry_later(by_run, exc)
            return
        for run_id, msgs in by_run.items():
            for msg in msgs:
                if run_id in missing:
                    TERMINATED.labels("run_not_found").inc()
                    log.warning("message for unknown run terminated", run_id=str(run_id))
                    await msg.term()
                else:
                    await msg.ack()

    async def _retry_later(self, by_run: dict[uuid.UUID, list[Msg]], exc: BaseException) -> None:
        log.warning("decision failed; will retry", error=repr(exc), runs=len(by_run))
        for run_id, msgs in by_run.items():
            for msg in msgs:
                delivered = msg.metadata.num_delivered
                if delivered >= self.settings.max_deliver:
                    reason = f"dispatch failed after {delivered} deliveries: {type(exc).__name__}"
                    try:
                        async with self.db.connection() as conn:
                            await fail_run(conn, run_id, reason)
                    except RETRYABLE_ERRORS:
                        log.error("run left for the sweeper", run_id=str(run_id))
                    await msg.term()
                else:
                    await msg.nak(delay=min(0.5 * 2 ** (delivered - 1), 15.0))

    async def sweep(self) -> None:
        """Decide runs still `received` some seconds after they were recorded, straight from Postgres."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                async with self.db.connection() as conn:
                    rows = await conn.fetch(
                        QUERIES["stale_received_runs"], self.settings.sweep_after_sec, 500
                    )
                if rows:
                    decisions = await self.decide_and_publish([r["id"] for r in rows], skip_locked=True)
                    SWEEPER_PICKUPS.inc(len(decisions))
                    if decisions:
                        log.info("sweeper decided runs", count=len(decisions))
                    if len(rows) == 500:
                        continue
            except RETRYABLE_ERRORS as exc:
                log.warning("sweep failed; will retry", error=repr(exc))
            elapsed = time.monotonic() - started
            await sleep_unless_stopped(self.stopping, self.settings.sweep_interval_sec - elapsed)
