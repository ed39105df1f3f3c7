"""The concurrency decision for one run: pure, so it is tested for every input."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    ISSUE_CREATED = "issue_created"
    COALESCED = "coalesced"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ActiveIssue:
    """The routine's open execution issue and the run that created it."""

    issue_id: uuid.UUID
    run_id: uuid.UUID | None


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
