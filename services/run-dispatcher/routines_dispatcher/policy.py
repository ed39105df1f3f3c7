"""The concurrency decision for one run: pure, so it is tested for every input."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from typing import NamedTuple


class Outcome(enum.StrEnum):
    ISSUE_CREATED = "issue_created"
    COALESCED = "coalesced"
    SKIPPED = "skipped"
    FAILED = "failed"


class ActiveIssue(NamedTuple):
    """The routine's open execution issue and the run that created it."""

    issue_id: uuid.UUID
    run_id: uuid.UUID | None
    opened_at: datetime | None = None
    assignee_id: uuid.UUID | None = None  # who works on it now (woken when fires are coalesced)


def decide_concurrency(policy: str, routine_status: str, active: ActiveIssue | None) -> Outcome:
    """What happens to a new run, given the routine's policy and its active issue (if any)."""
    if routine_status == "archived":
        return Outcome.FAILED
    if active is None or policy == "always_enqueue":
        return Outcome.ISSUE_CREATED
    if policy == "coalesce_if_active":
        return Outcome.COALESCED
    if policy == "skip_if_active":
        return Outcome.SKIPPED
    raise ValueError(f"unknown concurrency policy {policy!r}")


def is_stale_to_cancel(
    stale_after_sec: int | None, stale_action: str, active: ActiveIssue | None, at: datetime
) -> bool:
    """An open execution issue older than `staleAfterSec` when a new run arrives, on a routine
    that asked for stale issues to be cancelled (so one forgotten issue cannot silence it)."""
    if stale_after_sec is None or stale_action != "cancel" or active is None or active.opened_at is None:
        return False
    return at - active.opened_at > timedelta(seconds=stale_after_sec)
