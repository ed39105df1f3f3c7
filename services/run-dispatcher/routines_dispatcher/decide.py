"""Step 3 of the pipeline: decide runs in one transaction holding their routines' row locks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from routines_dispatcher.policy import ActiveIssue, Outcome, decide_concurrency, is_stale_to_cancel
from routines_dispatcher.render import VariableError, issue_content
from routines_dispatcher.sql import QUERIES
from shared.bus import Bus, Subjects
from shared.cron import iso_utc
from shared.ids import new_id

FAILURE_REASON_MAX = 500
STALE_REASON = "execution issue stale: open longer than staleAfterSec, cancelled"


class Decision(NamedTuple):
    """What was decided for one run; published after commit. (A named tuple: made for every run,
    at a fifth of a frozen dataclass's cost.)"""

    run_id: uuid.UUID
    routine_id: uuid.UUID
    agent_id: uuid.UUID  # the agent woken: its issue's assignee (else the routine's)
    status: Outcome
    issue_id: uuid.UUID | None
    triggered_at: datetime
    stale_cancelled: bool = False  # deciding it closed the routine's stale issue (its run failed)


async def decide_runs(
    conn: asyncpg.Connection,
    run_ids: Sequence[uuid.UUID],
    *,
    skip_locked: bool = False,
    as_of: datetime | None = None,
) -> list[Decision]:
    """Decide every still-undecided run among `run_ids`. Call inside a transaction. `as_of`: the
    time the decision is made at (issues' creation, runs' decidedAt; default now) — a slot decided
    ahead of time and committed at the slot is decided as of the slot."""
    if not run_ids:
        return []
    ids = list(run_ids)
    lock_query = QUERIES["lock_routines_skip_locked" if skip_locked else "lock_routines"]
    routines = {r["id"]: r for r in await conn.fetch(lock_query, ids)}
    if not routines:
        return []
    routine_ids = list(routines)
    with_variables = [r["id"] for r in routines.values() if r["variables"]]
    runs = await conn.fetch(QUERIES["undecided_runs"], ids, routine_ids, with_variables)
    if not runs:
        return []
    # A routine without variables says the same for every run: its content is made once.
    plain = {r["id"]: issue_content(r, {}) for r in routines.values() if not r["variables"]}
    active: dict[uuid.UUID, ActiveIssue] = {
        row["routine_id"]: ActiveIssue(
            row["id"], row["origin_run_id"], row["created_at"], row["assignee_agent_id"]
        )
        for row in await conn.fetch(QUERIES["active_issues"], routine_ids)
    }
    decisions: list[Decision] = []
    new_issues: list[tuple[Any, ...]] = []
    stale: list[uuid.UUID] = []
    coalesced: dict[uuid.UUID, list[asyncpg.Record]] = {}  # issue → the runs coalesced into it
    updates: list[tuple[uuid.UUID, str, uuid.UUID | None, uuid.UUID | None, str | None, str | None]] = []
    for run in runs:
        routine = routines[run["routine_id"]]
        current = active.get(routine["id"])
        was_stale = current is not None and is_stale_to_cancel(
            routine["stale_after_sec"], routine["stale_action"], current, run["triggered_at"]
        )
        if current is not None and was_stale:
            stale.append(current.issue_id)
            del active[routine["id"]]
            current = None
        content, problem = plain.get(routine["id"]), None
        if content is None:
            try:
                content = issue_content(routine, run)
            except VariableError as exc:  # a required variable without a value fails the run
                content, problem = None, str(exc)
        outcome = (
            Outcome.FAILED
            if problem is not None
            else decide_concurrency(routine["concurrency_policy"], routine["status"], current)
        )
        issue_id: uuid.UUID | None = None
        into_run: uuid.UUID | None = None
        reason: str | None = None
        agent = routine["assignee_agent_id"]  # who is woken (an issue's assignee, if it has one)
        resolved = None if content is None or content.values is None else json.dumps(content.values)
        if outcome is Outcome.ISSUE_CREATED:
            assert content is not None
            issue_id = new_id()
            new_issues.append(
                (
                    issue_id,
                    routine["id"],
                    run["id"],
                    # Without variables the issue says what the routine says: taken in SQL, not
                    # sent again for every run.
                    None if content.values is None else content.title,
                    None if content.values is None else content.description,
                    run["assignee_override"],
                    run["project_override"],
                )
            )
            agent = run["assignee_override"] or agent
            active[routine["id"]] = ActiveIssue(issue_id, run["id"], assignee_id=agent)
        elif outcome in (Outcome.COALESCED, Outcome.SKIPPED):
            assert current is not None
            issue_id, into_run = current.issue_id, current.run_id
            agent = current.assignee_id or agent
            if outcome is Outcome.COALESCED:
                coalesced.setdefault(issue_id, []).append(run)
        else:
            reason = problem or "routine archived"
        updates.append((run["id"], outcome.value, issue_id, into_run, reason, resolved))
        decisions.append(
            Decision(
                run["id"],
                routine["id"],
                agent,
                outcome,
                issue_id,
                run["triggered_at"],
                stale_cancelled=was_stale,
            )
        )
    if stale:
        await conn.execute(QUERIES["cancel_stale_issues"], stale, STALE_REASON, as_of)
    if new_issues:
        await conn.execute(QUERIES["insert_execution_issues"], *_columns(new_issues), as_of)
    if coalesced:
        await conn.execute(
            QUERIES["record_coalesced_fires"],
            list(coalesced),
            [len(fires) for fires in coalesced.values()],
            # Text, not jsonb[]: asyncpg would read lists of unequal length as a ragged 2-D array.
            [
                json.dumps([_fire_ref(r) for r in fires[-COALESCED_FIRE_REFS:]])
                for fires in coalesced.values()
            ],
            as_of,
        )
    await conn.execute(QUERIES["set_run_decisions"], *_columns(updates), as_of)
    touched: dict[uuid.UUID, tuple[datetime, bool]] = {}
    for d in decisions:
        last, enqueued = touched.get(d.routine_id, (d.triggered_at, False))
        touched[d.routine_id] = (max(last, d.triggered_at), enqueued or d.status is Outcome.ISSUE_CREATED)
    await conn.execute(
        QUERIES["touch_routines"],
        list(touched),
        [t for t, _ in touched.values()],
        [e for _, e in touched.values()],
        as_of,
    )
    return decisions


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any] | None]:
    """The rows' columns as arrays for `unnest` — or NULL for a column of nothing but NULLs (no
    override, no variables: most runs), which `unnest` of several arrays pads with NULLs just the
    same, without an element to encode for every run. (`count` compares by identity first: for a
    column of NULLs, a loop in C; a generator over it was twice the cost of the whole transpose.
    A column whose first or last value is not NULL is known without counting.)"""
    return [
        None
        if column[0] is None and column[-1] is None and column.count(None) == len(column)
        else list(column)
        for column in zip(*rows, strict=True)
    ]


COALESCED_FIRE_REFS = 100
"""How many references to the latest coalesced fires an issue keeps (record_coalesced_fires)."""


def _fire_ref(run: asyncpg.Record) -> dict[str, Any]:
    return {
        "runId": str(run["id"]),
        "source": run["source"],
        "triggeredAt": iso_utc(run["triggered_at"]),
        "payloadBytes": run["payload_bytes"],
    }


async def fail_run(conn: asyncpg.Connection, run_id: uuid.UUID, reason: str) -> Decision | None:
    """Mark a run that can never be decided as failed; its decision, or None if it was already
    decided (or is gone)."""
    row = await conn.fetchrow(QUERIES["fail_run"], run_id, reason[:FAILURE_REASON_MAX])
    if row is None:
        return None
    return Decision(
        row["id"], row["routine_id"], row["assignee_agent_id"], Outcome.FAILED, None, row["triggered_at"]
    )


DECISIONS_PER_MESSAGE = 100
"""The most decisions one `routines.runs.dispatched` message carries."""


async def publish_decisions(bus: Bus, decisions: Sequence[Decision]) -> None:
    """After commit: announce the decisions, up to DECISIONS_PER_MESSAGE per message
    (`{"decisions": [{runId, status, issueId}, ...]}`), and wake each agent that has work, naming
    up to DECISIONS_PER_MESSAGE runs a wake-up: issues created one after the other for one agent by
    one routine are one wake-up (`issueIds`, one per run), and fires coalesced into an issue are
    one wake-up per issue — not one per fire: a hot routine would otherwise wake its agent
    thousands of times a second (and each wake-up costs the dispatcher and NATS more than the
    decision's own share of its transaction).

    Plain publishes: the events stream still captures them, and nothing would be done with a
    PubAck — the decision is already committed, and agents also poll their issues. One after the
    other: a plain publish only appends to the connection's buffer, so a task per message (as
    `gather` would make) costs more than the publish itself.
    """
    for chunk in _chunks(decisions):
        await bus.publish_quietly(
            Subjects.RUNS_DISPATCHED,
            dispatched_message(chunk),
            msg_id=f"dispatched-{chunk[0].run_id}+{len(chunk)}",
        )
    for runs in _wakeups(decisions):
        last = runs[-1]
        await bus.publish_quietly(
            Subjects.agent_wakeup(str(last.agent_id)),
            wakeup_message(runs),
            msg_id=f"wakeup-{last.run_id}+{len(runs)}",
        )


def dispatched_message(decisions: Sequence[Decision]) -> bytes:
    """`{"decisions": [{runId, status, issueId}, ...]}` as JSON, written directly: every value is
    an id, null or a status word, none needing an escape — and json.dumps of a dict per decision
    was a tenth of the dispatcher's CPU (tests/unit/test_dispatcher_messages.py checks the
    result against it)."""
    return b'{"decisions":[%s]}' % b",".join(
        b'{"runId":"%s","status":"%s","issueId":%s}'
        % (_ascii(d.run_id), d.status.value.encode(), b'"%s"' % _ascii(d.issue_id) if d.issue_id else b"null")
        for d in decisions
    )


def wakeup_message(runs: Sequence[Decision]) -> bytes:
    """One wake-up naming `runs` (of one agent; the last decides what it says), as JSON written
    directly like dispatched_message: `{issueId, runId, runIds, routineId, reason}`, and
    `issueIds` (one per run) when they created issues."""
    last = runs[-1]
    head = b'{"issueId":"%s","runId":"%s","runIds":%s,"routineId":"%s",' % (
        _ascii(last.issue_id),
        _ascii(last.run_id),
        _ids(d.run_id for d in runs),
        _ascii(last.routine_id),
    )
    if last.status is Outcome.ISSUE_CREATED:
        return head + b'"issueIds":%s,"reason":"issue_created"}' % _ids(d.issue_id for d in runs)
    return head + b'"reason":"run_coalesced"}'


def _ascii(value: object) -> bytes:
    return str(value).encode()


def _ids(ids: Iterable[uuid.UUID | None]) -> bytes:
    """A JSON array of ids (as strings)."""
    return b"[%s]" % b",".join(b'"%s"' % _ascii(i) for i in ids)


def _wakeups(decisions: Sequence[Decision]) -> list[Sequence[Decision]]:
    """The runs each wake-up names, in the order each routine's runs were decided: the fires
    coalesced into one issue together, sent where the last of them (or the 100th) was decided; the
    issues a routine creates one after the other for one agent together, sent at that routine's
    next decision of another kind (or the 101st), before coalesced fires are sent to the same
    agent, or at the end. So the agent never hears of an issue after the one that replaced it (a
    stale issue cancelled, mid-transaction, by a fire that created its successor), nor of a fire
    before the creation of its issue, nor of fires before issues created for it earlier in the
    decision."""
    last = {d.issue_id: i for i, d in enumerate(decisions) if d.status is Outcome.COALESCED}
    coalescing: dict[uuid.UUID | None, list[Decision]] = {}  # by issue
    creating: dict[uuid.UUID, list[Decision]] = {}  # by routine
    wakeups: list[Sequence[Decision]] = []
    for i, d in enumerate(decisions):
        created = creating.get(d.routine_id)
        if created and (
            d.status is not Outcome.ISSUE_CREATED
            or d.agent_id != created[-1].agent_id
            or len(created) == DECISIONS_PER_MESSAGE
        ):
            wakeups.append(creating.pop(d.routine_id))
        if d.status is Outcome.ISSUE_CREATED:
            creating.setdefault(d.routine_id, []).append(d)
        elif d.status is Outcome.COALESCED:
            runs = coalescing.setdefault(d.issue_id, [])
            runs.append(d)
            if len(runs) == DECISIONS_PER_MESSAGE or last[d.issue_id] == i:
                # The agent hears of the issues created for it earlier first.
                for routine in [r for r, group in creating.items() if group[0].agent_id == d.agent_id]:
                    wakeups.append(creating.pop(routine))
                wakeups.append(tuple(runs))
                runs.clear()
    wakeups += creating.values()
    return wakeups


def _chunks(decisions: Sequence[Decision]) -> list[Sequence[Decision]]:
    return [decisions[i : i + DECISIONS_PER_MESSAGE] for i in range(0, len(decisions), DECISIONS_PER_MESSAGE)]
