"""The API's runs against real Postgres and NATS: manual runs, their execution issues, and how
finishing an issue finishes its run."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.integration import api_client
from tests.integration.api_client import Client, Tenant, World, call, make_routine


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs wait briefly for their decision here."""
    return {"manual_run_wait_sec": 0.2}


async def _decided_run(
    client: Client, db: asyncpg.Connection, tenant: Tenant, routine_id: str, body: dict[str, Any]
) -> Any:
    """A manual run, decided the way the dispatcher does (there is no dispatcher here), as the API shows it."""
    from routines_dispatcher.decide import decide_runs

    run = await api_client.run_routine(client, tenant, routine_id, body)
    async with db.transaction():
        await decide_runs(db, [uuid.UUID(run["id"])])
    return await call(client, "GET", f"/api/runs/{run['id']}", tenant.board, status=200)


async def test_a_manual_run_cannot_use_another_routines_trigger(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    other = await make_routine(client, world.a)
    t_other = await api_client.make_trigger(client, world.a, other["id"], {"kind": "api"})
    await api_client.run_routine(client, world.a, routine["id"], {"triggerId": t_other["id"]}, 403)


async def test_a_manual_run_cannot_use_a_disabled_trigger(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    t = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "api", "enabled": False})
    await api_client.run_routine(client, world.a, routine["id"], {"triggerId": t["id"]}, 409)


async def test_a_manual_run_retried_with_its_idempotency_key_is_the_same_run(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    """The same key with the same payload is the retry (a different payload is 422: DESIGN)."""
    first = await api_client.run_routine(
        client, world.a, routine["id"], {"source": "api", "payload": {"x": 1}, "idempotencyKey": "k1"}
    )
    again = await api_client.run_routine(
        client, world.a, routine["id"], {"payload": {"x": 1}, "idempotencyKey": "k1"}, 200
    )
    assert again["id"] == first["id"]
    assert first["source"] == "api"
    assert first["payload"] == {"x": 1}


@pytest.mark.parametrize(
    "body",
    [{"idempotencyKey": "k" * 256}, {"payload": [1, 2]}, {"source": "schedule"}],
    ids=["long-idempotency-key", "payload-not-an-object", "schedule-source"],
)
async def test_invalid_manual_runs_are_400(
    client: Client, world: World, routine: dict[str, Any], body: dict[str, Any]
) -> None:
    await api_client.run_routine(client, world.a, routine["id"], body, 400)


async def test_a_paused_routine_can_still_be_run_by_hand(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    await api_client.patch_routine(client, world.a, routine["id"], {"status": "paused"})
    await api_client.run_routine(client, world.a, routine["id"])


async def test_the_run_list_takes_a_limit_between_1_and_500(
    client: Client, world: World, routine: dict[str, Any]
) -> None:
    for _ in range(2):
        await api_client.run_routine(client, world.a, routine["id"])
    runs = await api_client.routine_runs(client, world.a, routine["id"], "?limit=1")
    assert len(runs) == 1
    for bad in ("0", "501", "x"):
        await call(
            client, "GET", f"/api/routines/{routine['id']}/runs?limit={bad}", world.a.board, status=400
        )


async def test_an_execution_issue_has_the_routines_parent_and_the_runs_payload(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    parent = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/issues", world.a.board, {"title": "Parent"}, 201
    )
    r = await make_routine(client, world.a, parentIssueId=parent["id"])
    run = await _decided_run(client, db, world.a, r["id"], {"payload": {"ctx": "hi"}})
    issue = await call(client, "GET", f"/api/issues/{run['linkedIssueId']}", world.a.agent_key, status=200)
    assert (issue["parentIssueId"], issue["payload"], issue["originKind"], issue["originRunId"]) == (
        parent["id"],
        {"ctx": "hi"},
        "routine_execution",
        run["id"],
    )


async def test_an_agent_lists_its_todo_issues_of_a_routine(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    run = await _decided_run(client, db, world.a, routine["id"], {})
    mine = await call(
        client,
        "GET",
        f"/api/companies/{world.a.company_id}/issues?assigneeAgentId={world.a.agent_id}&status=todo&routineId={routine['id']}",
        world.a.agent_key,
        status=200,
    )
    assert [i["id"] for i in mine] == [run["linkedIssueId"]]


async def test_the_assignee_finishing_the_execution_issue_completes_the_run(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    issue = (await _decided_run(client, db, world.a, routine["id"], {}))["linkedIssueId"]
    await call(client, "PATCH", f"/api/issues/{issue}", world.a.other_agent_key, {"status": "done"}, 403)
    await call(client, "PATCH", f"/api/issues/{issue}", world.a.agent_key, {"status": "done"}, 200)
    run = (await api_client.routine_runs(client, world.a, routine["id"]))[0]
    assert run["status"] == "completed"
    assert run["completedAt"] is not None


async def test_cancelling_the_execution_issue_fails_the_run(
    client: Client, world: World, db: asyncpg.Connection, routine: dict[str, Any]
) -> None:
    issue = (await _decided_run(client, db, world.a, routine["id"], {}))["linkedIssueId"]
    await call(client, "PATCH", f"/api/issues/{issue}", world.a.board, {"status": "cancelled"}, 200)
    failed = (await api_client.routine_runs(client, world.a, routine["id"]))[0]
    assert (failed["status"], failed["failureReason"]) == ("failed", "execution issue cancelled")


async def test_an_unknown_issue_status_filter_is_400(client: Client, world: World) -> None:
    await call(
        client, "GET", f"/api/companies/{world.a.company_id}/issues?status=open", world.a.board, status=400
    )


async def test_execution_issue_carries_every_field_of_its_routine(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Title, description, priority, project, goal, parent issue and assignee come from the routine;
    status todo; origin routine_execution with the routine and run ids; the run's payload."""
    a = world.a
    r, goal, parent = await api_client.make_routine_under_goal_and_parent(
        client, a, "G", "P", title="Weekly review", description="look at everything", priority="high"
    )
    run = await _decided_run(client, db, a, r["id"], {"payload": {"week": 48}})
    issue = await call(client, "GET", f"/api/issues/{run['linkedIssueId']}", a.agent_key, status=200)
    expected = {
        "title": "Weekly review",
        "description": "look at everything",
        "priority": "high",
        "status": "todo",
        "projectId": a.project_id,
        "goalId": goal["id"],
        "parentIssueId": parent["id"],
        "assigneeAgentId": a.agent_id,
        "companyId": a.company_id,
        "originKind": "routine_execution",
        "originId": r["id"],
        "originRunId": run["id"],
        "payload": {"week": 48},
        "coalescedFireCount": 0,
        "coalescedFires": [],
    }
    assert {k: issue[k] for k in expected} == expected
