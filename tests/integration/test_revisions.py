"""Routine revisions (every change recorded; restore; optimistic concurrency with baseRevisionId)
and the activity logs of a routine and a company."""

from __future__ import annotations

from typing import Any

from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, get_json

__all__ = ["api_settings"]


async def _revisions(client: Client, world: World, routine_id: str) -> list[dict[str, Any]]:
    body, _ = await get_json(client, f"/api/routines/{routine_id}/revisions?limit=100", world.a.board)
    return list(body)


async def test_every_change_is_a_revision_with_who_and_what(client: Client, world: World) -> None:
    r = await make_routine(client, world.a, token=world.a.agent_key)
    assert r["revisionId"] is not None
    await api_client.patch_routine(client, world.a, r["id"], {"priority": "high"})
    await call(
        client,
        "PATCH",
        f"/api/routines/{r['id']}",
        world.a.agent_key,
        {"title": "Renamed", "priority": "high"},
        200,
    )
    await api_client.patch_routine(client, world.a, r["id"], {"title": "Renamed"})  # no change
    revs = await _revisions(client, world, r["id"])
    assert [v["number"] for v in revs] == [3, 2, 1]
    assert revs[0]["changes"] == {"title": {"from": "Daily report", "to": "Renamed"}}
    assert (revs[0]["actorKind"], revs[0]["actorId"]) == ("agent", world.a.agent_id)
    assert (
        revs[1]["changes"] == {"priority": {"from": "medium", "to": "high"}}
        and revs[1]["actorKind"] == "board"
    )
    assert revs[2]["changes"] == {} and revs[2]["snapshot"]["title"] == "Daily report"
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert detail["revisionId"] == revs[0]["id"]
    # Pages with a cursor.
    page, headers = await get_json(client, f"/api/routines/{r['id']}/revisions?limit=2", world.a.board)
    rest, more = await get_json(
        client, f"/api/routines/{r['id']}/revisions?limit=2&cursor={headers['X-Next-Cursor']}", world.a.board
    )
    assert [v["number"] for v in [*page, *rest]] == [3, 2, 1] and "X-Next-Cursor" not in more


async def test_base_revision_id_gives_409_when_someone_changed_it(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    base = r["revisionId"]
    mine = await call(
        client,
        "PATCH",
        f"/api/routines/{r['id']}",
        world.a.agent_key,
        {"title": "Mine", "baseRevisionId": base},
        200,
    )
    theirs = await api_client.patch_routine(
        client, world.a, r["id"], {"title": "Theirs", "baseRevisionId": base}, 409
    )
    assert theirs["details"] == {"currentRevisionId": mine["revisionId"]}
    await api_client.patch_routine(
        client, world.a, r["id"], {"title": "Theirs", "baseRevisionId": mine["revisionId"]}
    )


async def test_restore_brings_back_fields_but_not_the_status(client: Client, world: World) -> None:
    r = await make_routine(client, world.a, description="v1", failureAlertAfter=2)
    first = r["revisionId"]
    await api_client.patch_routine(
        client,
        world.a,
        r["id"],
        {"title": "v2", "description": "v2", "failureAlertAfter": None, "status": "paused"},
    )
    restored = await call(
        client, "POST", f"/api/routines/{r['id']}/revisions/{first}/restore", world.a.agent_key, None, 200
    )
    assert (
        restored["title"],
        restored["description"],
        restored["failureAlertAfter"],
        restored["status"],
    ) == (
        "Daily report",
        "v1",
        2,
        "paused",
    )
    latest = (await _revisions(client, world, r["id"]))[0]
    assert latest["restoredFrom"] == first and set(latest["changes"]) == {
        "title",
        "description",
        "failureAlertAfter",
    }
    # Agents cannot restore a revision that assigns the routine to someone else.
    other = await api_client.patch_routine(
        client, world.a, r["id"], {"assigneeAgentId": world.a.other_agent_id}
    )
    back = await api_client.patch_routine(client, world.a, r["id"], {"assigneeAgentId": world.a.agent_id})
    assert back["assigneeAgentId"] == world.a.agent_id
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/revisions/{other['revisionId']}/restore",
        world.a.agent_key,
        None,
        403,
    )
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/revisions/{other['revisionId']}/restore",
        world.a.board,
        None,
        200,
    )
    another = await make_routine(client, world.a)
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/revisions/{another['revisionId']}/restore",
        world.a.board,
        None,
        404,
    )
    await api_client.patch_routine(client, world.a, r["id"], {"status": "archived"})
    await call(client, "POST", f"/api/routines/{r['id']}/revisions/{first}/restore", world.a.board, None, 409)


async def test_activity_log_of_a_routine_and_its_company(client: Client, world: World) -> None:
    r = await make_routine(client, world.a, token=world.a.agent_key)
    hook = await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
    await call(client, "POST", f"/api/routine-triggers/{hook['id']}/rotate-secret", world.a.board, {}, 200)
    await api_client.patch_trigger(client, world.a, hook["id"], {"label": "ci"})
    run = await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.agent_key, {}, 202)
    await api_client.patch_routine(client, world.a, r["id"], {"status": "paused"})
    await api_client.patch_routine(client, world.a, r["id"], {"status": "active"})
    await call(client, "DELETE", f"/api/routine-triggers/{hook['id']}", world.a.board, None, 204)
    body, _ = await get_json(client, f"/api/routines/{r['id']}/activity?limit=100", world.a.other_agent_key)
    actions = [a["action"] for a in body]
    expected = [
        "trigger_deleted",
        "resumed",
        "paused",
        "manual_run",
        "trigger_updated",
        "secret_rotated",
        "trigger_added",
        "created",
    ]
    assert [a for a in actions if a != "run_recorded"] == expected
    assert "run_recorded" in actions
    recorded = next(a for a in body if a["action"] == "run_recorded")
    assert recorded["details"]["runId"] == run["id"]
    manual = next(a for a in body if a["action"] == "manual_run")
    assert (manual["actorKind"], manual["actorId"], manual["details"]["runId"]) == (
        "agent",
        world.a.agent_id,
        run["id"],
    )
    assert all("secret" not in str(a["details"]).lower() for a in body)
    company, _ = await get_json(
        client, f"/api/companies/{world.a.company_id}/activity?limit=3", world.a.board
    )
    assert [a["action"] for a in company] == expected[:3] and company[0]["routineId"] == r["id"]
    await get_json(client, f"/api/companies/{world.a.company_id}/activity", world.b.board, 403)
    await get_json(client, f"/api/routines/{r['id']}/activity", world.b.board, 404)
    await get_json(client, f"/api/routines/{r['id']}/activity?cursor=zzz", world.a.board, 400)
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert detail["triggers"] == []
