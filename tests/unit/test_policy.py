"""The concurrency decision for every policy, routine status and active-issue state."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routines_dispatcher.policy import ActiveIssue, Outcome, decide_concurrency

POLICIES = ["coalesce_if_active", "skip_if_active", "always_enqueue"]
ACTIVE = ActiveIssue(uuid.uuid4(), uuid.uuid4())


@pytest.mark.parametrize(
    ("policy", "active", "expected"),
    [
        ("coalesce_if_active", None, Outcome.ISSUE_CREATED),
        ("coalesce_if_active", ACTIVE, Outcome.COALESCED),
        ("skip_if_active", None, Outcome.ISSUE_CREATED),
        ("skip_if_active", ACTIVE, Outcome.SKIPPED),
        ("always_enqueue", None, Outcome.ISSUE_CREATED),
        ("always_enqueue", ACTIVE, Outcome.ISSUE_CREATED),
    ],
)
def test_policy_table(policy: str, active: ActiveIssue | None, expected: Outcome) -> None:
    assert decide_concurrency(policy, "active", active) is expected
    assert decide_concurrency(policy, "paused", active) is expected


@given(st.sampled_from(POLICIES), st.booleans())
def test_archived_routine_always_fails(policy: str, has_active: bool) -> None:
    assert decide_concurrency(policy, "archived", ACTIVE if has_active else None) is Outcome.FAILED


@given(st.sampled_from(POLICIES), st.sampled_from(["active", "paused"]))
def test_no_active_issue_always_creates_one(policy: str, status: str) -> None:
    assert decide_concurrency(policy, status, None) is Outcome.ISSUE_CREATED


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown concurrency policy"):
        decide_concurrency("yolo", "active", ACTIVE)
