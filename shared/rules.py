"""When a trigger may fire: one rule for the API, the gateway and the scheduler (whose claim query
selects only enabled triggers, then asks `can_fire` about the routine)."""

from __future__ import annotations

from datetime import datetime

from shared.cron import next_fire


def why_not_fire(enabled: bool, routine_status: str) -> str | None:
    """Why a trigger cannot fire now (DESIGN: paused and archived routines do not fire from
    schedules or webhooks; neither does a disabled trigger), or None when it can."""
    if not enabled:
        return "trigger disabled"
    if routine_status != "active":
        return f"routine is {routine_status}"
    return None


def can_fire(enabled: bool, routine_status: str) -> bool:
    """Whether a trigger fires from its schedule or webhook."""
    return why_not_fire(enabled, routine_status) is None


def next_run_at(
    kind: str, enabled: bool, routine_status: str, cron: str | None, tz: str | None, now: datetime
) -> datetime | None:
    """When a schedule trigger fires next after `now`, or None while it cannot fire (which parks
    it: resuming or re-enabling recomputes from the new now, so paused time is not "missed")."""
    if kind != "schedule" or cron is None or tz is None or not can_fire(enabled, routine_status):
        return None
    return next_fire(cron, tz, now)
