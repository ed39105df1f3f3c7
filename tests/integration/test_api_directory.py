"""The API's directory against real Postgres and NATS: companies, agents and their keys, goals,
projects, board and instance tokens."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.api_client import Client, World, call


async def _mint_board_token(client: Client, world: World, name: str) -> Any:
    return await call(
        client,
        "POST",
        f"/api/companies/{world.a.company_id}/board-tokens",
        world.a.board,
        {"name": name},
        201,
    )


async def test_agents_me_is_the_calling_agent_and_not_for_a_board(client: Client, world: World) -> None:
    me = await call(client, "GET", "/api/agents/me", world.a.agent_key, status=200)
    assert me["id"] == world.a.agent_id
    await call(client, "GET", "/api/agents/me", world.a.board, status=403)


async def test_a_board_sees_its_company_and_the_instance_admin_every_company(
    client: Client, world: World
) -> None:
    companies = await call(client, "GET", "/api/companies", world.a.board, status=200)
    assert [c["id"] for c in companies] == [world.a.company_id]
    assert len(await call(client, "GET", "/api/companies", world.admin, status=200)) == 2


async def test_an_agent_lists_its_companys_goals(client: Client, world: World) -> None:
    goal = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/goals", world.a.board, {"title": "Grow"}, 201
    )
    goals = await call(
        client, "GET", f"/api/companies/{world.a.company_id}/goals", world.a.agent_key, status=200
    )
    assert [g["id"] for g in goals] == [goal["id"]]


@pytest.mark.parametrize(("listing", "count"), [("projects", 1), ("agents", 2)])
async def test_an_agent_lists_its_companys_projects_and_agents(
    client: Client, world: World, listing: str, count: int
) -> None:
    listed = await call(
        client, "GET", f"/api/companies/{world.a.company_id}/{listing}", world.a.agent_key, status=200
    )
    assert len(listed) == count


async def test_a_board_token_minted_by_a_board_member_works(client: Client, world: World) -> None:
    token = (await _mint_board_token(client, world, "2"))["token"]
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", token, status=200)


async def test_a_terminated_agents_key_stops_working(client: Client, world: World) -> None:
    terminated = await call(
        client, "PATCH", f"/api/agents/{world.a.other_agent_id}", world.a.board, {"status": "terminated"}, 200
    )
    assert terminated["status"] == "terminated"
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)


async def test_an_unknown_agent_status_is_400(client: Client, world: World) -> None:
    await call(client, "PATCH", f"/api/agents/{world.a.agent_id}", world.a.board, {"status": "sleeping"}, 400)


async def test_terminated_agent_does_not_regain_its_key_when_reactivated(
    client: Client, world: World
) -> None:
    """Termination revokes the agent's keys permanently; re-activation needs a new key."""
    agent = f"/api/agents/{world.a.other_agent_id}"
    await call(client, "PATCH", agent, world.a.board, {"status": "terminated"}, 200)
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)
    await call(client, "PATCH", agent, world.a.board, {"status": "active"}, 200)
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)
    await call(client, "PATCH", agent, world.a.board, {"status": "terminated"}, 200)
    await call(client, "POST", f"{agent}/rotate-key", world.a.board, None, 409)
    await call(client, "PATCH", agent, world.a.board, {"status": "active"}, 200)
    fresh = await call(client, "POST", f"{agent}/rotate-key", world.a.board, None, 200)
    assert fresh["agent"]["id"] == world.a.other_agent_id
    me = await call(client, "GET", "/api/agents/me", fresh["apiKey"], status=200)
    assert me["id"] == world.a.other_agent_id


async def test_agent_key_rotation_invalidates_the_old_key_at_once(client: Client, world: World) -> None:
    rotated = await call(
        client, "POST", f"/api/agents/{world.a.agent_id}/rotate-key", world.a.board, None, 200
    )
    assert rotated["apiKey"].startswith("rtk_") and rotated["apiKey"] != world.a.agent_key
    await call(client, "GET", "/api/agents/me", world.a.agent_key, status=401)
    # An agent may rotate its own key (a leaked key); the key it used stops working.
    own = await call(
        client, "POST", f"/api/agents/{world.a.agent_id}/rotate-key", rotated["apiKey"], None, 200
    )
    await call(client, "GET", "/api/agents/me", rotated["apiKey"], status=401)
    await call(client, "GET", "/api/agents/me", own["apiKey"], status=200)
    # ... but not another agent's.
    await call(client, "POST", f"/api/agents/{world.a.other_agent_id}/rotate-key", own["apiKey"], None, 403)


async def test_board_tokens_are_listed_without_their_secrets(client: Client, world: World) -> None:
    second = await _mint_board_token(client, world, "ci")
    resp = await client.get(
        f"/api/companies/{world.a.company_id}/board-tokens",
        headers={"Authorization": f"Bearer {world.a.board}"},
    )
    text = await resp.text()
    assert resp.status == 200
    assert second["token"] not in text and world.a.board not in text
    listed = json.loads(text)
    assert {t["name"] for t in listed} == {"ops", "ci"}
    assert all(set(t) == {"id", "kind", "name", "companyId", "createdAt", "revokedAt"} for t in listed)


async def test_a_revoked_board_token_stops_working_at_once(client: Client, world: World) -> None:
    second = await _mint_board_token(client, world, "ci")
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", second["token"], status=200)
    revoked = await call(client, "POST", f"/api/board-tokens/{second['id']}/revoke", world.a.board, None, 200)
    assert revoked["revokedAt"] is not None
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", second["token"], status=401)
    again = await call(client, "POST", f"/api/board-tokens/{second['id']}/revoke", world.a.board, None, 200)
    assert again["revokedAt"] == revoked["revokedAt"]


@pytest.fixture
async def spare_instance_token(database_url: str) -> str:
    """A second instance admin token, named "spare"."""
    from shared.bootstrap import create_instance_admin_token

    return await create_instance_admin_token(database_url, "spare")


async def _instance_tokens(client: Client, world: World) -> Any:
    return await call(client, "GET", "/api/instance-tokens", world.admin, status=200)


def _spare_id(tokens: Any) -> str:
    (spare_id,) = [t["id"] for t in tokens if t["name"] == "spare"]
    return str(spare_id)


async def test_only_the_instance_admin_lists_and_revokes_instance_tokens(
    client: Client, world: World, spare_instance_token: str
) -> None:
    spare = spare_instance_token
    await call(client, "GET", "/api/companies", spare, status=200)
    tokens = await _instance_tokens(client, world)
    assert spare not in json.dumps(tokens)
    spare_id = _spare_id(tokens)
    await call(client, "POST", f"/api/instance-tokens/{spare_id}/revoke", world.a.board, None, 403)
    await call(client, "POST", f"/api/instance-tokens/{spare_id}/revoke", world.admin, None, 200)
    await call(client, "GET", "/api/companies", spare, status=401)


async def test_the_last_working_instance_token_is_kept(
    client: Client, world: World, spare_instance_token: str
) -> None:
    """Revoking it would lock everyone out."""
    tokens = await _instance_tokens(client, world)
    spare_id = _spare_id(tokens)
    await call(client, "POST", f"/api/instance-tokens/{spare_id}/revoke", world.admin, None, 200)
    (own_id,) = [t["id"] for t in tokens if t["revokedAt"] is None and t["name"] != "spare"]
    await call(client, "POST", f"/api/instance-tokens/{own_id}/revoke", world.admin, None, 409)
    await call(client, "GET", "/api/companies", world.admin, status=200)
    await call(client, "POST", f"/api/instance-tokens/{uuid.uuid4()}/revoke", world.admin, None, 404)


async def test_board_and_instance_token_ids_are_not_interchangeable(
    client: Client, world: World, spare_instance_token: str
) -> None:
    second = await _mint_board_token(client, world, "ci")
    spare_id = _spare_id(await _instance_tokens(client, world))
    await call(client, "POST", f"/api/instance-tokens/{second['id']}/revoke", world.admin, None, 404)
    await call(client, "POST", f"/api/board-tokens/{spare_id}/revoke", world.admin, None, 404)
