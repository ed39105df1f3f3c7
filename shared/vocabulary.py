"""The domain's words, once: statuses, policies, sources and modes.

Models, handlers, services and tests import these; the database's CHECK constraints and the
status lists inside SQL are held to them by tests/integration/test_vocabulary.py.
"""

from __future__ import annotations

from typing import Literal, get_args

Priority = Literal["critical", "high", "medium", "low"]
RoutineStatus = Literal["active", "paused", "archived"]
ConcurrencyPolicy = Literal["coalesce_if_active", "skip_if_active", "always_enqueue"]
CatchUpPolicy = Literal["skip_missed", "enqueue_missed_with_cap"]
TriggerKind = Literal["schedule", "webhook", "api"]
SigningMode = Literal["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]
IssueStatus = Literal["backlog", "todo", "in_progress", "in_review", "blocked", "done", "cancelled"]
AgentStatus = Literal["active", "paused", "terminated"]
TokenKind = Literal["instance_admin", "board", "agent"]
RunSource = Literal["schedule", "webhook", "api", "manual", "replay", "backfill"]
RunStatus = Literal["received", "issue_created", "coalesced", "skipped", "failed", "completed"]

PRIORITIES: tuple[str, ...] = get_args(Priority)
ROUTINE_STATUSES: tuple[str, ...] = get_args(RoutineStatus)
CONCURRENCY_POLICIES: tuple[str, ...] = get_args(ConcurrencyPolicy)
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUpPolicy)
TRIGGER_KINDS: tuple[str, ...] = get_args(TriggerKind)
SIGNING_MODES: tuple[str, ...] = get_args(SigningMode)
ISSUE_STATUSES: tuple[str, ...] = get_args(IssueStatus)
AGENT_STATUSES: tuple[str, ...] = get_args(AgentStatus)
TOKEN_KINDS: tuple[str, ...] = get_args(TokenKind)
RUN_SOURCES: tuple[str, ...] = get_args(RunSource)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

# An execution issue in one of these is open: its run is active (DESIGN.md, "Active run").
OPEN_ISSUE_STATUSES: tuple[str, ...] = ("backlog", "todo", "in_progress", "in_review", "blocked")
# A run in one of these has been decided.
DECIDED_RUN_STATUSES: tuple[str, ...] = tuple(s for s in RUN_STATUSES if s != "received")
