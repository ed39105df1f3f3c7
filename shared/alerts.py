"""Failure alerts and auto-pause (DESIGN: schedule health): after runs settle, a routine whose
latest `failureAlertAfter` settled runs all failed gets one `routines.alerts` event (and a wake-up
of its agent with reason `routine_failing`); `autoPauseAfter` pauses it with a `pausedReason`; the
next completed run publishes one recovery event. Conditional updates make each event happen once,
however many services settle runs of the routine at the same time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.bus import Bus, Subjects
from shared.sql import QUERIES


@dataclass(frozen=True)
class AlertEvent:
    """One event to publish after commit."""

    kind: str  # routine_failing | routine_auto_paused | routine_recovered
    routine_id: uuid.UUID
    company_id: uuid.UUID
    agent_id: uuid.UUID
    details: dict[str, Any] = field(default_factory=dict)

    def message(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "routineId": str(self.routine_id),
            "companyId": str(self.company_id),
            "agentId": str(self.agent_id),
            **self.details,
        }


def failure_streak(statuses: Sequence[str]) -> int:
    """Consecutive `failed` at the head of settled statuses (newest first)."""
    streak = 0
    for status in statuses:
        if status != "failed":
            break
        streak += 1
    return streak


async def evaluate_failure_alerts(
    conn: asyncpg.Connection, routine_ids: Iterable[uuid.UUID]
) -> list[AlertEvent]:
    """Apply the alert and auto-pause rules to these routines; the events to publish after commit."""
    ids = list(set(routine_ids))
    if not ids:
        return []
    events: list[AlertEvent] = []
    for routine in await conn.fetch(QUERIES["alerting_routines"], ids):
        threshold = max(routine["failure_alert_after"] or 0, routine["auto_pause_after"] or 0, 1)
        settled = await conn.fetch(QUERIES["latest_settled_runs"], routine["id"], threshold)
        streak = failure_streak([r["status"] for r in settled])
        base = (routine["id"], routine["company_id"], routine["assignee_agent_id"])
        last_reason = settled[0]["failure_reason"] if streak else None
        alert_after, pause_after = routine["failure_alert_after"], routine["auto_pause_after"]
        alerting = alert_after is not None and streak >= alert_after
        if alerting and await conn.fetchval(QUERIES["mark_alerted"], routine["id"]):
            details = {"consecutiveFailures": streak, "lastFailureReason": last_reason}
            await _log(conn, routine, "failure_alert", details)
            events.append(AlertEvent("routine_failing", *base, details))
        pausing = pause_after is not None and streak >= pause_after and routine["status"] == "active"
        reason = f"auto-paused after {streak} consecutive failed runs"
        if pausing and await conn.fetchval(QUERIES["auto_pause"], routine["id"], reason):
            events.append(AlertEvent("routine_auto_paused", *base, {"pausedReason": reason}))
        recovered = bool(settled) and settled[0]["status"] == "completed"
        if recovered and await conn.fetchval(QUERIES["clear_alerted"], routine["id"]):
            run = {"runId": str(settled[0]["id"])}
            await _log(conn, routine, "recovered", run)
            events.append(AlertEvent("routine_recovered", *base, run))
    return events


async def _log(
    conn: asyncpg.Connection, routine: asyncpg.Record, action: str, details: dict[str, Any]
) -> None:
    await conn.execute(
        QUERIES["insert_alert_activity"], routine["company_id"], routine["id"], action, details
    )


async def publish_alerts(bus: Bus, events: Sequence[AlertEvent]) -> None:
    """After commit: `routines.alerts`, and a wake-up of the agent while its routine is failing."""
    await asyncio.gather(*(_publish(bus, e) for e in events))


async def _publish(bus: Bus, event: AlertEvent) -> None:
    await bus.publish_quietly(Subjects.ROUTINE_ALERTS, event.message())
    if event.kind in ("routine_failing", "routine_auto_paused"):
        await bus.publish_quietly(
            Subjects.agent_wakeup(str(event.agent_id)),
            {"routineId": str(event.routine_id), "reason": "routine_failing", "alert": event.kind},
        )
    if event.kind == "routine_auto_paused":
        await bus.publish_quietly(Subjects.TRIGGERS_CHANGED, {"routineId": str(event.routine_id)})
