"""The links a decision writes (migration 0012): checked by the locks the decision holds, not row
by row by foreign keys, and still set to NULL when what they name is deleted."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from routines_api.sql import QUERIES as API_QUERIES
from routines_dispatcher.sql import QUERIES
from shared.db import Database
from shared.ids import new_id
from tests.factories import decide, make_issue, make_routine, make_run, make_world
from tests.support import Stack, never_waits_on, someone_waits_on, triggers_fired, wait_until

# What checks an execution issue's own keys (company, project, goal, parent, assignee): once a
# statement since migration 0013 (tests/integration/test_issue_references.py).
ISSUE_KEYS = {"issues_check_inserted"}


async def test_a_decision_checks_no_link_row_by_row(db: asyncpg.Connection) -> None:
    """Creating issues for 20 runs checks only the issue's own keys (company, project, goal,
    parent, assignee: once for the statement), and linking 20 runs to their issues fires no
    trigger at all."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    runs = [await make_run(db, world, routine) for _ in range(20)]
    issues = [new_id() for _ in runs]
    none = [None] * len(runs)
    inserted = await triggers_fired(
        db,
        QUERIES["insert_execution_issues"],
        issues,
        [routine] * len(runs),
        runs,
        none,
        none,
        none,
        none,
        None,
    )
    assert set(inserted) <= ISSUE_KEYS, inserted
    assert inserted  # the issue's own keys are still checked
    await db.executemany(
        "INSERT INTO issues (id, company_id, title, origin_kind, origin_id, origin_run_id)"
        " VALUES ($1, $2, 'x', 'routine_execution', $3, $4)",
        [(issue, world.company_id, routine, run) for issue, run in zip(issues, runs, strict=True)],
    )
    linked = await triggers_fired(
        db,
        QUERIES["set_run_decisions"],
        runs,
        ["issue_created"] * len(runs),
        issues,
        [runs[0]] * len(runs),
        none,
        none,
        None,
    )
    assert linked == {}


async def _coalesced_pair(
    db: asyncpg.Connection, dispatcher_db: Database
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Two runs of a coalesce_if_active routine decided: the first created the issue (returned
    third), the second was coalesced into it."""
    world = await make_world(db)
    routine = await make_routine(db, world, "coalesce_if_active")
    first, second = await make_run(db, world, routine), await make_run(db, world, routine)
    await decide(dispatcher_db, [first, second])
    issue = await db.fetchval("SELECT linked_issue_id FROM routine_runs WHERE id = $1", first)
    return first, second, issue


async def test_deleting_an_issue_unlinks_the_runs_that_named_it(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    first, second, issue = await _coalesced_pair(db, dispatcher_db)
    links = await db.fetch(
        "SELECT id, status, linked_issue_id FROM routine_runs WHERE id = ANY($1::uuid[]) ORDER BY id",
        [first, second],
    )
    assert {(r["status"], r["linked_issue_id"]) for r in links} == {
        ("issue_created", issue),
        ("coalesced", issue),
    }
    assert await db.execute("DELETE FROM issues WHERE id = $1", issue) == "DELETE 1"
    left = await db.fetch(
        "SELECT linked_issue_id, coalesced_into_run_id FROM routine_runs WHERE id = ANY($1::uuid[])",
        [first, second],
    )
    assert [r["linked_issue_id"] for r in left] == [None, None]
    assert {r["coalesced_into_run_id"] for r in left} == {None, first}  # runs are untouched


async def test_deleting_a_run_unlinks_its_issue_and_the_runs_that_went_into_it(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    first, second, issue = await _coalesced_pair(db, dispatcher_db)
    assert await db.fetchval("SELECT origin_run_id FROM issues WHERE id = $1", issue) == first
    assert await db.fetchval("SELECT coalesced_into_run_id FROM routine_runs WHERE id = $1", second) == first
    assert await db.execute("DELETE FROM routine_runs WHERE id = $1", first) == "DELETE 1"
    assert await db.fetchval("SELECT origin_run_id FROM issues WHERE id = $1", issue) is None
    row = await db.fetchrow(
        "SELECT coalesced_into_run_id, linked_issue_id FROM routine_runs WHERE id = $1", second
    )
    assert (row["coalesced_into_run_id"], row["linked_issue_id"]) == (None, issue)


async def test_a_decision_never_links_an_issue_being_deleted(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack
) -> None:
    """A routine's open issue deleted by a transaction still open when a decision reads it: the
    decision waits for that transaction, then passes the issue over (here: creates a new one).
    Read without the lock, the run would be linked to an issue gone once both commit."""
    world = await make_world(db)
    routine = await make_routine(db, world, "skip_if_active")
    doomed = await make_issue(db, world, routine, "todo")
    run = await make_run(db, world, routine)
    deleting = await asyncpg.connect(stack.database_url)
    try:
        tx = deleting.transaction()
        await tx.start()
        await deleting.execute("DELETE FROM issues WHERE id = $1", doomed)
        deciding = asyncio.ensure_future(decide(dispatcher_db, [run]))
        deleter = await deleting.fetchval("SELECT pg_backend_pid()")
        await wait_until(lambda: someone_waits_on(db, deleter))
        assert not deciding.done()
        await tx.commit()
        await asyncio.wait_for(deciding, timeout=10)
    finally:
        await deleting.close()
    row = await db.fetchrow("SELECT status, linked_issue_id FROM routine_runs WHERE id = $1", run)
    assert row["status"] == "issue_created"
    assert row["linked_issue_id"] != doomed
    assert await db.fetchval("SELECT origin_run_id FROM issues WHERE id = $1", row["linked_issue_id"]) == run


@pytest.mark.parametrize(
    ("policy", "outcome"), [("always_enqueue", "issue_created"), ("skip_if_active", "skipped")]
)
async def test_a_decision_never_waits_on_an_agent_updating_the_open_issue(
    db: asyncpg.Connection, dispatcher_db: Database, stack: Stack, policy: str, outcome: str
) -> None:
    """The API locks an issue it updates FOR NO KEY UPDATE, which a decision's FOR KEY SHARE of the
    routine's open issue does not wait for: a decision holds its routines' locks meanwhile. (A
    decision coalescing fires into the issue updates it, and so waits, as it always has.)"""
    world = await make_world(db)
    routine = await make_routine(db, world, policy)
    first, second = await make_run(db, world, routine), await make_run(db, world, routine)
    await decide(dispatcher_db, [first])
    issue = await db.fetchval("SELECT linked_issue_id FROM routine_runs WHERE id = $1", first)
    agent = await asyncpg.connect(stack.database_url)
    try:
        async with agent.transaction():
            assert (await agent.fetchrow(API_QUERIES["issue_for_update"], issue))["id"] == issue
            await agent.execute(API_QUERIES["update_issue_status"], issue, "in_progress")
            holder = await agent.fetchval("SELECT pg_backend_pid()")
            await never_waits_on(db, holder, decide(dispatcher_db, [second]), "a decision waited on the API")
    finally:
        await agent.close()
    row = await db.fetchrow("SELECT status, linked_issue_id FROM routine_runs WHERE id = $1", second)
    assert row["status"] == outcome
    assert (row["linked_issue_id"] == issue) is (outcome == "skipped")


@pytest.mark.parametrize("table", ["issues", "routine_runs"])
async def test_issues_and_runs_are_deleted_under_read_committed_only(
    db: asyncpg.Connection, dispatcher_db: Database, table: str
) -> None:
    """Under REPEATABLE READ the unlinking trigger could not see links committed after the
    deleter's snapshot: it refuses, as the keys' cross-check did. Deleting nothing is no refusal."""
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    run = await make_run(db, world, routine)
    await decide(dispatcher_db, [run])
    doomed = (
        run
        if table == "routine_runs"
        else await db.fetchval("SELECT linked_issue_id FROM routine_runs WHERE id = $1", run)
    )
    async with db.transaction(isolation="repeatable_read"):
        assert await db.execute(f"DELETE FROM {table} WHERE id = $1", uuid.uuid4()) == "DELETE 0"
    with pytest.raises(asyncpg.SerializationError, match="READ COMMITTED"):
        async with db.transaction(isolation="repeatable_read"):
            await db.execute(f"DELETE FROM {table} WHERE id = $1", doomed)
    assert await db.execute(f"DELETE FROM {table} WHERE id = $1", doomed) == "DELETE 1"


async def test_runs_are_not_truncated_from_under_the_issues_that_name_them(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    run = await make_run(db, world, routine)
    await decide(dispatcher_db, [run])
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="truncate issues in the same statement"):
        await db.execute("TRUNCATE routine_runs")
    assert await db.fetchval("SELECT count(*) FROM routine_runs") == 1
    await db.execute("TRUNCATE routine_runs, issues CASCADE")
    assert await db.fetchval("SELECT count(*) FROM issues") == 0
