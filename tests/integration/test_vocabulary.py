"""One vocabulary: the database's CHECK constraints and the status lists written inside SQL say
exactly what shared/vocabulary.py says."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from shared import vocabulary as v

ROOT = Path(__file__).resolve().parents[2]

# (table, column) → the words its CHECK constraint must allow, no more and no fewer.
COLUMNS = {
    ("routines", "priority"): v.PRIORITIES,
    ("routines", "status"): v.ROUTINE_STATUSES,
    ("routines", "concurrency_policy"): v.CONCURRENCY_POLICIES,
    ("routines", "catch_up_policy"): v.CATCH_UP_POLICIES,
    ("routine_triggers", "kind"): v.TRIGGER_KINDS,
    ("routine_triggers", "signing_mode"): v.SIGNING_MODES,
    ("issues", "status"): v.ISSUE_STATUSES,
    ("issues", "priority"): v.PRIORITIES,
    ("agents", "status"): v.AGENT_STATUSES,
    ("api_tokens", "kind"): v.TOKEN_KINDS,
    ("routine_runs", "source"): v.RUN_SOURCES,
    ("routine_runs", "status"): v.RUN_STATUSES,
}


async def _allowed(db: asyncpg.Connection, table: str, column: str) -> set[str]:
    rows = await db.fetch(
        """
        SELECT pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        WHERE c.contype = 'c' AND t.relname = $1
        """,
        table,
    )
    found: set[str] = set()
    for row in rows:
        definition = row["def"]
        # e.g. CHECK ((status = ANY (ARRAY['active'::text, 'paused'::text])))
        if re.search(rf"\(\(?{column}\b\s*=\s*ANY", definition):
            found |= set(re.findall(r"'([^']+)'::text", definition))
    return found


@pytest.mark.parametrize(("table", "column"), list(COLUMNS), ids=[f"{t}.{c}" for t, c in COLUMNS])
async def test_check_constraints_equal_the_vocabulary(
    db: asyncpg.Connection, table: str, column: str
) -> None:
    assert await _allowed(db, table, column) == set(COLUMNS[(table, column)])


def test_open_issue_statuses_written_in_sql_equal_the_vocabulary() -> None:
    """Every SQL list of issue statuses that starts with 'backlog' is the open set, in full."""
    lists = []
    for path in [*ROOT.glob("services/*/routines_*/*.sql"), *ROOT.glob("shared/*.sql")]:
        for match in re.finditer(r"IN \(('backlog'[^)]*)\)", path.read_text()):
            lists.append((path.name, tuple(re.findall(r"'([a-z_]+)'", match.group(1)))))
    assert lists, "no open-status lists found: has the SQL moved?"
    for name, words in lists:
        assert words == v.OPEN_ISSUE_STATUSES, name


def test_the_open_statuses_are_the_issue_statuses_that_are_not_final() -> None:
    assert set(v.OPEN_ISSUE_STATUSES) == set(v.ISSUE_STATUSES) - {"done", "cancelled"}
    assert set(v.DECIDED_RUN_STATUSES) == set(v.RUN_STATUSES) - {"received"}
