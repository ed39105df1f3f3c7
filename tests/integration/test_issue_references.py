"""The rows an issue names (migration 0013): checked once per statement for each distinct key, not
row by row by foreign keys — with the keys' guarantees and errors kept: nothing names a row that
is gone, a company's issues go with it, a named row is not deleted, and a delete racing an insert
either waits and sees the issue or makes the insert fail."""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

import asyncpg
import pytest

from routines_dispatcher.sql import QUERIES
from shared.db import Database
from shared.ids import new_id
from tests.factories import World, decide, make_routine, make_run, make_world
from tests.support import Stack, someone_waits_on, triggers_fired, wait_until

OLD_KEYS = {
    "issues_company_id_fkey",
    "issues_project_id_fkey",
    "issues_goal_id_fkey",
    "issues_parent_issue_id_fkey",
    "issues_assignee_agent_id_fkey",
}
# The issue's columns that name rows, and the tables they name (the company first).
KEYS = [
    ("company_id", "companies"),
    ("project_id", "projects"),
    ("goal_id", "goals"),
    ("parent_issue_id", "issues"),
    ("assignee_agent_id", "agents"),
]
INSERT = (
    "INSERT INTO issues (company_id, title, project_id, goal_id, parent_issue_id, assignee_agent_id)"
    " VALUES ($1, 'x', $2, $3, $4, $5) RETURNING id"
)


async def _goal(db: asyncpg.Connection, world: World) -> uuid.UUID:
    return uuid.UUID(
        str(
            await db.fetchval(
                "INSERT INTO goals (company_id, title) VALUES ($1, 'g') RETURNING id", world.company_id
            )
        )
    )


async def _named(db: asyncpg.Connection, world: World) -> dict[str, uuid.UUID]:
    """An issue naming every kind of row (a goal and a parent issue made for it): column → id."""
    goal = await _goal(db, world)
    parent = await db.fetchval(INSERT, world.company_id, None, None, None, None)
    keys = {
        "company_id": world.company_id,
        "project_id": world.project_id,
        "goal_id": goal,
        "parent_issue_id": parent,
        "assignee_agent_id": world.agent_id,
    }
    keys["issue"] = await db.fetchval(INSERT, *keys.values())
    return keys


async def test_a_decision_checks_the_keys_of_its_issues_once_not_row_by_row(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue", goal_id=await _goal(db, world))
    runs = [await make_run(db, world, routine) for _ in range(20)]
    none = [None] * len(runs)
    fired = await triggers_fired(
        db,
        QUERIES["insert_execution_issues"],
        [new_id() for _ in runs],
        [routine] * len(runs),
        runs,
        none,
        none,
        none,
        none,
        None,
    )
    assert not set(fired) & OLD_KEYS, fired
    assert fired.get("issues_check_inserted") == 1, fired


async def test_an_issue_that_changes_no_key_checks_none(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    issue = (await _named(db, world))["issue"]
    fired = await triggers_fired(db, "UPDATE issues SET status = 'done' WHERE id = $1", issue)
    assert "issues_check_updated" not in fired, fired


@pytest.mark.parametrize(("column", "table"), KEYS)
async def test_an_issue_naming_a_row_that_does_not_exist_is_refused_as_the_key_refused_it(
    db: asyncpg.Connection, column: str, table: str
) -> None:
    world = await make_world(db)
    keys = await _named(db, world)
    ghost = uuid.uuid4()
    values = {k: v for k, v in keys.items() if k != "issue"}
    bad = {**values, column: ghost}
    # One bad row among good ones, in one statement.
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await db.execute(
            "INSERT INTO issues (company_id, title, project_id, goal_id, parent_issue_id, assignee_agent_id)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[])",
            *(
                [row[k] for row in (values, bad, values)] if k != "title" else ["a", "b", "c"]
                for k in (
                    "company_id",
                    "title",
                    "project_id",
                    "goal_id",
                    "parent_issue_id",
                    "assignee_agent_id",
                )
            ),
        )
    assert refused.value.constraint_name == f"issues_{column}_fkey"
    assert refused.value.detail == f'Key ({column})=({ghost}) is not present in table "{table}".'
    assert await db.fetchval("SELECT count(*) FROM issues WHERE company_id = $1", world.company_id) == 2
    # And an update that names it.
    with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"issues_{column}_fkey"):
        await db.execute(f"UPDATE issues SET {column} = $2 WHERE id = $1", keys["issue"], ghost)
    # NULL names nothing.
    if column != "company_id":
        await db.execute(f"UPDATE issues SET {column} = NULL WHERE id = $1", keys["issue"])


@pytest.mark.parametrize(("column", "table"), KEYS[1:])  # a company: its own test
async def test_a_row_an_issue_names_is_not_deleted_nor_renumbered(
    db: asyncpg.Connection, column: str, table: str
) -> None:
    world = await make_world(db)
    keys = await _named(db, world)  # nothing but the issue names these rows
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await db.execute(f"DELETE FROM {table} WHERE id = $1", keys[column])
    assert refused.value.constraint_name == f"issues_{column}_fkey"
    assert refused.value.detail == f'Key (id)=({keys[column]}) is still referenced from table "issues".'
    with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"issues_{column}_fkey"):
        await db.execute(f"UPDATE {table} SET id = $2 WHERE id = $1", keys[column], uuid.uuid4())
    # Named by nothing any more: it goes.
    await db.execute(f"UPDATE issues SET {column} = NULL WHERE id = $1", keys["issue"])
    assert await db.execute(f"DELETE FROM {table} WHERE id = $1", keys[column]) == "DELETE 1"


async def test_a_parent_and_its_children_are_deleted_together(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    keys = await _named(db, world)
    deleted = await db.execute(
        "DELETE FROM issues WHERE id = ANY($1::uuid[])", [keys["issue"], keys["parent_issue_id"]]
    )
    assert deleted == "DELETE 2"


async def test_deleting_a_company_deletes_its_issues_and_leaves_other_companies_alone(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    world, other = await make_world(db), await make_world(db, "Other")
    keys = await _named(db, world)
    # A routine whose parent issue is one of the company's issues, with runs decided into issues.
    routine = await make_routine(db, world, "always_enqueue", parent_issue_id=keys["parent_issue_id"])
    await decide(dispatcher_db, [await make_run(db, world, routine) for _ in range(3)])
    kept = (await _named(db, other))["issue"]
    assert await db.fetchval("SELECT count(*) FROM issues WHERE company_id = $1", world.company_id) == 5
    assert await db.execute("DELETE FROM companies WHERE id = $1", world.company_id) == "DELETE 1"
    assert await db.fetchval("SELECT count(*) FROM issues WHERE company_id = $1", world.company_id) == 0
    assert await db.fetchval("SELECT count(*) FROM routines WHERE company_id = $1", world.company_id) == 0
    assert await db.fetchval("SELECT count(*) FROM issues WHERE id = $1", kept) == 1
    # A company named by an issue alone keeps its id.
    bare = await db.fetchval("INSERT INTO companies (name) VALUES ('bare') RETURNING id")
    await db.execute(INSERT, bare, None, None, None, None)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="issues_company_id_fkey"):
        await db.execute("UPDATE companies SET id = $2 WHERE id = $1", bare, uuid.uuid4())


@pytest.mark.parametrize("first", ["insert", "delete"])
async def test_a_delete_racing_an_insert_never_leaves_an_issue_naming_nothing(
    db: asyncpg.Connection, stack: Stack, first: str
) -> None:
    """The issue's insert locks the agent it names, as a key's check did: a delete of the agent
    waits for it, then sees the issue and is refused; an agent being deleted makes the insert wait,
    then fail."""
    world = await make_world(db)
    agent = await db.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'doomed') RETURNING id", world.company_id
    )
    holder, other = await asyncpg.connect(stack.database_url), await asyncpg.connect(stack.database_url)
    insert = (INSERT, world.company_id, None, None, None, agent)
    delete = ("DELETE FROM agents WHERE id = $1", agent)
    try:
        tx = holder.transaction()
        await tx.start()
        held, racing = (insert, delete) if first == "insert" else (delete, insert)
        await holder.execute(*held)
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        race = asyncio.ensure_future(other.execute(*racing))
        await wait_until(lambda: someone_waits_on(db, pid))
        assert not race.done()
        await tx.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="issues_assignee_agent_id_fkey"):
            await asyncio.wait_for(race, timeout=10)
    finally:
        await holder.close()
        await other.close()
    issues = await db.fetchval("SELECT count(*) FROM issues WHERE assignee_agent_id = $1", agent)
    agents = await db.fetchval("SELECT count(*) FROM agents WHERE id = $1", agent)
    assert (issues, agents) == ((1, 1) if first == "insert" else (0, 0))


async def test_rows_issues_name_are_deleted_under_read_committed_only(db: asyncpg.Connection) -> None:
    """Under REPEATABLE READ the trigger could not see an issue committed after the deleter's
    snapshot: it refuses, as 0012's do."""
    world = await make_world(db)
    goal = await _goal(db, world)
    with pytest.raises(asyncpg.SerializationError, match="READ COMMITTED"):
        async with db.transaction(isolation="repeatable_read"):
            await db.execute("DELETE FROM goals WHERE id = $1", goal)
    async with db.transaction(isolation="repeatable_read"):  # deleting nothing is no refusal
        assert await db.execute("DELETE FROM goals WHERE id = $1", uuid.uuid4()) == "DELETE 0"
    assert await db.execute("DELETE FROM goals WHERE id = $1", goal) == "DELETE 1"


async def test_a_table_issues_name_is_not_truncated_from_under_them(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    await _named(db, world)
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="truncate issues in the same statement"):
        await db.execute("TRUNCATE goals CASCADE")  # what names goals by a key (routines) goes too
    assert await db.fetchval("SELECT count(*) FROM goals") == 1
    await db.execute("TRUNCATE goals, issues CASCADE")
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


async def test_an_execution_issue_still_names_what_its_routine_names(
    db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world, "always_enqueue")
    run = await make_run(db, world, routine)
    await decide(dispatcher_db, [run])
    issue = await db.fetchrow(
        "SELECT company_id, project_id, assignee_agent_id FROM issues WHERE origin_run_id = $1", run
    )
    assert issue is not None
    assert tuple(issue) == (world.company_id, world.project_id, world.agent_id)


@pytest.mark.parametrize("named_by", ["issue", "routine"])
async def test_companies_deleted_together_take_issues_naming_each_other_with_them(
    db: asyncpg.Connection, named_by: str
) -> None:
    """ON DELETE CASCADE deleted every company's issues before the keys checked what still named
    them (at the end of the statement): companies deleted in one statement went, whatever their
    issues and routines named among them. So do they now: the issues of every company the statement
    deleted go in one statement (deleted one company at a time, the first's were checked while the
    second's issues and routines still named them)."""
    first, second = uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)  # deleted in this order
    for company in (first, second):
        await db.execute("INSERT INTO companies (id, name) VALUES ($1, 'c')", company)
    parent = await db.fetchval(INSERT, first, None, None, None, None)
    if named_by == "issue":
        await db.execute(INSERT, second, None, None, parent, None)
    else:
        agent = await db.fetchval(
            "INSERT INTO agents (company_id, name) VALUES ($1, 'a') RETURNING id", second
        )
        project = await db.fetchval(
            "INSERT INTO projects (company_id, name) VALUES ($1, 'p') RETURNING id", second
        )
        await make_routine(db, World(second, agent, project), parent_issue_id=parent)
    assert await db.execute("DELETE FROM companies WHERE id = ANY($1::uuid[])", [first, second]) == "DELETE 2"
    assert await db.fetchval("SELECT count(*) FROM issues") == 0


@pytest.mark.parametrize("isolation", ["repeatable_read", "serializable"])
async def test_a_truncate_under_a_snapshot_does_not_leave_issues_naming_nothing(
    db: asyncpg.Connection, database_url: str, isolation: Literal["repeatable_read", "serializable"]
) -> None:
    """The TRUNCATE trigger looks for issues naming the table's rows with the transaction's
    snapshot: under REPEATABLE READ it does not see an issue committed after that snapshot, and
    the rows it names are truncated from under it (the key truncated such issues with them, and
    deletes are refused under these isolation levels for this very reason)."""
    world = await make_world(db)
    goal = await _goal(db, world)
    truncator = await asyncpg.connect(database_url)
    try:
        tx = truncator.transaction(isolation=isolation)
        await tx.start()
        await truncator.fetchval("SELECT 1")  # the transaction's snapshot
        await db.execute(INSERT, world.company_id, None, goal, None, None)  # committed after it
        try:
            await truncator.execute("TRUNCATE goals CASCADE")
        except asyncpg.PostgresError:
            await tx.rollback()
        else:
            await tx.commit()
    finally:
        await truncator.close()
    dangling = await db.fetchval(
        "SELECT count(*) FROM issues i WHERE goal_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM goals g WHERE g.id = i.goal_id)"
    )
    assert dangling == 0


@pytest.mark.parametrize("table", ["goals", "routine_runs"])
async def test_tables_issues_name_are_truncated_under_read_committed_only(
    db: asyncpg.Connection, table: str
) -> None:
    """Refused under a transaction's snapshot before anything is looked at (an issue committed
    after it would not be seen); under READ COMMITTED, truncated with issues."""
    with pytest.raises(asyncpg.SerializationError, match="READ COMMITTED"):
        async with db.transaction(isolation="repeatable_read"):
            await db.execute(f"TRUNCATE {table} CASCADE")
    await db.execute(f"TRUNCATE {table}, issues CASCADE")
