"""Request and response models of the routine features (issue 16): history, replay, the fire
simulator, backfill, variables, health, revisions and activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from routines_api.models import Input, Output

Outcome = Literal["issue_created", "coalesced", "skipped", "paused", "disabled", "archived"]


# --- history and replay ----------------------------------------------------------------------


class ReplayRequest(Input):
    """Replay a run; without `payload` the original payload is used again."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{}, {"payload": {"context": "retry after the outage"}}]}
    )

    payload: dict[str, Any] | None = Field(
        None, description="Payload of the new run; the original run's payload when omitted."
    )
    variables: dict[str, Any] | None = Field(
        None, description="Variable values of the new run; the original run's values when omitted."
    )


# --- fire simulator --------------------------------------------------------------------------


class UpcomingFire(Output):
    """One predicted fire of a schedule trigger."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "routineId": "6f1c1d2e-8a0b-4c55-9d0e-0c4a4b0f1a11",
                    "triggerId": "0b8f5a52-1f0c-4f7e-a0f7-7d2f3d1e9c20",
                    "label": "weekday mornings",
                    "cronExpression": "0 9 * * 1-5",
                    "timezone": "Europe/Amsterdam",
                    "utc": "2026-03-30T07:00:00Z",
                    "local": "2026-03-30T09:00:00+02:00",
                    "dst": True,
                    "predictedOutcome": "issue_created",
                }
            ]
        }
    )

    routine_id: uuid.UUID
    trigger_id: uuid.UUID
    label: str | None
    cron_expression: str
    timezone: str
    utc: str = Field(description="The fire instant in UTC (ISO 8601).")
    local: str = Field(description="The same instant in the trigger's time zone, with its offset.")
    dst: bool = Field(description="Whether daylight saving time is in effect locally at that instant.")
    predicted_outcome: Outcome = Field(
        description="What would happen if it fired now under the routine's concurrency policy; "
        "`paused`/`disabled`/`archived` when it would not fire at all."
    )


class UpcomingOut(Output):
    """The next fires of a routine, or a company's fires in a window, in time order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "fires": [
                        {
                            "routineId": "6f1c1d2e-8a0b-4c55-9d0e-0c4a4b0f1a11",
                            "triggerId": "0b8f5a52-1f0c-4f7e-a0f7-7d2f3d1e9c20",
                            "label": None,
                            "cronExpression": "0 9 * * 1-5",
                            "timezone": "Europe/Amsterdam",
                            "utc": "2026-03-27T08:00:00Z",
                            "local": "2026-03-27T09:00:00+01:00",
                            "dst": False,
                            "predictedOutcome": "coalesced",
                        }
                    ],
                    "truncated": True,
                }
            ]
        }
    )

    fires: list[UpcomingFire]
    truncated: bool = Field(False, description="More fires exist than were listed (a bound was hit).")


# --- backfill --------------------------------------------------------------------------------


class BackfillRequest(Input):
    """Slots of one schedule trigger in a window; records the missing ones unless `dryRun`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "triggerId": "0b8f5a52-1f0c-4f7e-a0f7-7d2f3d1e9c20",
                    "from": "2026-03-27T00:00:00Z",
                    "to": "2026-03-30T00:00:00Z",
                    "dryRun": True,
                }
            ]
        }
    )

    trigger_id: uuid.UUID = Field(description="A schedule trigger of this routine.")
    from_: datetime = Field(alias="from", description="Window start (exclusive), ISO 8601 with offset.")
    to: datetime = Field(description="Window end (inclusive); not in the future.")
    dry_run: bool = Field(True, description="Only list the slots (the default); nothing is recorded.")
    max_runs: int = Field(
        25, ge=1, description="At most this many runs are recorded (hard limit configurable)."
    )


class BackfillSlot(Output):
    """One slot of the window."""

    scheduled_for: str = Field(description="The slot's fire instant (UTC, ISO 8601).")
    local: str = Field(description="The slot in the trigger's time zone.")
    existing_run_id: uuid.UUID | None = Field(description="The run already recorded for this slot, if any.")
    recorded_run_id: uuid.UUID | None = Field(
        None, description="The run this call recorded for the slot (not in a dry run)."
    )


class BackfillOut(Output):
    """What a backfill found and (unless a dry run) recorded."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "triggerId": "0b8f5a52-1f0c-4f7e-a0f7-7d2f3d1e9c20",
                    "dryRun": False,
                    "slots": [
                        {
                            "scheduledFor": "2026-03-29T01:00:00Z",
                            "local": "2026-03-29T03:00:00+02:00",
                            "existingRunId": None,
                            "recordedRunId": "5d0e4c3b-2a19-4f8e-b7c6-d5e4f3a2b1c0",
                        }
                    ],
                    "missing": 1,
                    "recorded": 1,
                    "capped": 0,
                }
            ]
        }
    )

    trigger_id: uuid.UUID
    dry_run: bool
    slots: list[BackfillSlot]
    missing: int = Field(description="Slots without a run before this call.")
    recorded: int = Field(description="Runs recorded by this call (0 in a dry run).")
    capped: int = Field(description="Missing slots left unrecorded because of maxRuns.")


# --- schedule health -------------------------------------------------------------------------


class LagPercentiles(Output):
    """Fire lag of schedule runs (recorded minus scheduled), in seconds."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


class TriggerHealth(Output):
    """One schedule trigger's slots in the window and what became of them."""

    trigger_id: uuid.UUID
    label: str | None
    enabled: bool
    cron_expression: str
    timezone: str
    expected_slots: int = Field(description="Slots of the schedule in the window since the trigger existed.")
    expected_slots_at_least: bool = Field(description="Too many to count: expectedSlots is a lower bound.")
    on_time: int = Field(description="Schedule runs recorded within the misfire grace of their slot.")
    late: int = Field(description="Schedule runs recorded later than the grace (catch-up).")
    backfilled: int = Field(description="Slots recorded by a backfill.")
    missed_skipped: int = Field(description="Missed slots the catch-up policy dropped.")
    unaccounted: int = Field(
        description="Expected slots with no run and no drop record (e.g. while paused or disabled)."
    )
    lag_seconds: LagPercentiles


class OpenIssueHealth(Output):
    issue_id: uuid.UUID
    status: str
    opened_at: datetime
    age_sec: float
    stale: bool = Field(description="Open longer than staleAfterSec.")


class HealthOut(Output):
    """Schedule health of a routine over the last `days` days."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "routineId": "6f1c1d2e-8a0b-4c55-9d0e-0c4a4b0f1a11",
                    "days": 7,
                    "from": "2026-03-23T10:00:00Z",
                    "to": "2026-03-30T10:00:00Z",
                    "onTimeWithinSec": 60,
                    "triggers": [],
                    "runsByStatus": {"issue_created": 3, "failed": 2},
                    "failureStreak": 2,
                    "failureAlertAfter": 3,
                    "autoPauseAfter": None,
                    "alerting": False,
                    "staleAfterSec": 86400,
                    "staleAction": "report",
                    "pausedReason": None,
                    "openIssue": None,
                }
            ]
        }
    )

    routine_id: uuid.UUID
    days: int
    from_: str = Field(alias="from")
    to: str
    on_time_within_sec: int
    triggers: list[TriggerHealth]
    runs_by_status: dict[str, int]
    failure_streak: int = Field(description="Consecutive failed runs among the latest settled ones.")
    failure_alert_after: int | None
    auto_pause_after: int | None
    alerting: bool = Field(description="The failure alert fired and no run has completed since.")
    stale_after_sec: int | None
    stale_action: str
    paused_reason: str | None
    open_issue: OpenIssueHealth | None


# --- revisions and activity ------------------------------------------------------------------


class RevisionOut(Output):
    """One recorded state of a routine: who changed what, and when."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "a3d0c2f4-5b7e-4c1a-9f3e-2d4b6a8c0e12",
                    "routineId": "6f1c1d2e-8a0b-4c55-9d0e-0c4a4b0f1a11",
                    "number": 2,
                    "actorKind": "board",
                    "actorId": "c1b2a3d4-0000-4000-8000-000000000001",
                    "snapshot": {"title": "Weekly CEO briefing", "priority": "high"},
                    "changes": {"priority": {"from": "medium", "to": "high"}},
                    "restoredFrom": None,
                    "createdAt": "2026-03-30T10:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    routine_id: uuid.UUID
    number: int
    actor_kind: str = Field(description="instance_admin, board, agent or system.")
    actor_id: uuid.UUID | None = Field(description="The agent, or the token of a board operator.")
    snapshot: dict[str, Any] = Field(description="The routine's editable fields after this change.")
    changes: dict[str, Any] = Field(description="field → {from, to}; empty for the first revision.")
    restored_from: uuid.UUID | None
    created_at: datetime


class ActivityOut(Output):
    """One entry of an activity log."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6",
                    "routineId": "6f1c1d2e-8a0b-4c55-9d0e-0c4a4b0f1a11",
                    "at": "2026-03-30T10:00:00Z",
                    "actorKind": "agent",
                    "actorId": "c1b2a3d4-0000-4000-8000-000000000001",
                    "action": "manual_run",
                    "details": {"runId": "9b2c0d1e-2f3a-4b5c-8d6e-7f8091a2b3c4", "source": "manual"},
                }
            ]
        }
    )

    id: uuid.UUID
    routine_id: uuid.UUID | None = None
    at: datetime
    actor_kind: str
    actor_id: uuid.UUID | None
    action: str = Field(
        description="created, updated, paused, resumed, archived, restored, trigger_added, "
        "trigger_updated, trigger_deleted, secret_rotated, manual_run, replay, backfill, "
        "failure_alert, recovered, auto_paused, stale_cancelled, or run_recorded (a run and its outcome)."
    )
    details: dict[str, Any]
