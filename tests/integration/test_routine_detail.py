"""Richer answers: the routine detail's open issue, latest runs and per-trigger results; a board
operator's one-run assignee/project override (agents may not)."""

from __future__ import annotations

import asyncpg

from routines_dispatcher.worker import Dispatcher
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, decided, dispatcher

__all__ = ["api_settings", "dispatcher"]


async def test_detail_carries_active_issue_recent_runs_and_trigger_results(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher
) -> None:
    r = await make_routine(client, world.a)
    api = await api_client.make_trigger(client, world.a, r["id"], {"kind": "api"})
    hook = await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
    rotated = await call(
        client, "POST", f"/api/routine-triggers/{hook['id']}/rotate-secret", world.a.board, {}, 200
    )
    assert rotated["secret"]
    empty = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert (empty["activeIssue"], empty["recentRuns"]) == (None, [])
    runs = []
    for _ in range(7):
        run = await api_client.run_routine(client, world.a, r["id"], {"triggerId": api["id"]})
        runs.append(await decided(db, run["id"]))
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.agent_key, status=200)
    assert detail["activeIssue"]["id"] == str(runs[0]["linked_issue_id"])
    assert detail["activeIssue"]["coalescedFireCount"] == 6
    assert [x["id"] for x in detail["recentRuns"]] == [str(x["id"]) for x in reversed(runs)][:5]
    by_id = {t["id"]: t for t in detail["triggers"]}
    assert by_id[api["id"]]["lastResult"] == "coalesced"
    assert by_id[api["id"]]["lastFiredAt"] is not None
    assert by_id[hook["id"]]["lastResult"] is None and by_id[hook["id"]]["lastRotatedAt"] is not None
    assert by_id[api["id"]]["lastRotatedAt"] is None
    assert "secret" not in by_id[hook["id"]]
    await call(
        client, "PATCH", f"/api/issues/{detail['activeIssue']['id']}", world.a.board, {"status": "done"}, 200
    )
    after = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert after["activeIssue"] is None


async def test_board_may_override_assignee_and_project_for_one_run(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher
) -> None:
    r = await make_routine(client, world.a, concurrencyPolicy="always_enqueue")
    other_project = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/projects", world.a.board, {"name": "other"}, 201
    )
    override = {"assigneeAgentId": world.a.other_agent_id, "projectId": other_project["id"]}
    run = await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, override, 202)
    row = await decided(db, run["id"])
    issue = await call(client, "GET", f"/api/issues/{row['linked_issue_id']}", world.a.board, status=200)
    assert (issue["assigneeAgentId"], issue["projectId"]) == (world.a.other_agent_id, other_project["id"])
    got = await call(client, "GET", f"/api/runs/{run['id']}", world.a.board, status=200)
    assert (got["assigneeOverride"], got["projectOverride"]) == (world.a.other_agent_id, other_project["id"])
    # The routine itself is unchanged, and the next run goes to its own assignee.
    plain = await api_client.run_routine(client, world.a, r["id"], {})
    row = await decided(db, plain["id"])
    issue = await call(client, "GET", f"/api/issues/{row['linked_issue_id']}", world.a.board, status=200)
    assert (issue["assigneeAgentId"], issue["projectId"]) == (world.a.agent_id, world.a.project_id)
    # Agents may not override; overrides must be assignable within the company.
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.agent_key, override, 403)
    await api_client.run_routine(client, world.a, r["id"], {"assigneeAgentId": world.b.agent_id}, 422)
    await api_client.run_routine(client, world.a, r["id"], {"projectId": world.b.project_id}, 422)
    await call(
        client, "PATCH", f"/api/agents/{world.a.other_agent_id}", world.a.board, {"status": "paused"}, 200
    )
    await api_client.run_routine(client, world.a, r["id"], {"assigneeAgentId": world.a.other_agent_id}, 422)
