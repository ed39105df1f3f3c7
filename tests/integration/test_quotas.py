"""Per-company quotas: configurable bounds on what one company can create (422 naming the quota);
archived routines and revoked tokens do not count; another company is unaffected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration import api_client
from tests.integration.api_client import Client, World, api_app, call, make_routine, make_tenant
from tests.support import Stack, served


@pytest.fixture
def api_settings() -> dict[str, Any]:
    return {
        "quota_routines_per_company": 2,
        "quota_triggers_per_routine": 2,
        "quota_webhook_triggers_per_company": 3,
        "quota_agents_per_company": 3,
        "quota_board_tokens_per_company": 2,
        "quota_projects_per_company": 2,
        "quota_goals_per_company": 1,
    }


async def test_the_routine_quota_counts_the_companys_unarchived_routines(
    client: Client, world: World
) -> None:
    a = world.a
    r1 = await make_routine(client, a)
    await make_routine(client, a)
    body = {"title": "t", "assigneeAgentId": a.agent_id, "projectId": a.project_id}
    err = await call(client, "POST", f"/api/companies/{a.company_id}/routines", a.board, body, 422)
    assert "quota" in err["error"] and err["details"] == {"quota": "routinesPerCompany", "limit": 2}
    await make_routine(client, world.b)  # per company
    await api_client.patch_routine(client, a, r1["id"], {"status": "archived"})
    await make_routine(client, a)


async def test_the_trigger_quota_is_per_routine(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    for _ in range(2):
        await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
    err = await api_client.make_trigger(client, world.a, r["id"], {"kind": "api"}, 422)
    assert err["details"] == {"quota": "triggersPerRoutine", "limit": 2}


async def test_the_webhook_trigger_quota_counts_the_companys_webhook_triggers(
    client: Client, world: World
) -> None:
    first, second = [(await make_routine(client, world.a))["id"] for _ in range(2)]
    for _ in range(2):
        await api_client.make_trigger(client, world.a, first, {"kind": "webhook"})
    await api_client.make_trigger(client, world.a, second, {"kind": "webhook"})
    err = await api_client.make_trigger(client, world.a, second, {"kind": "webhook"}, 422)
    assert err["details"] == {"quota": "webhookTriggersPerCompany", "limit": 3}
    await api_client.make_trigger(client, world.a, second, {"kind": "api"})


@pytest.mark.parametrize(
    ("listing", "field", "quota", "limit"),
    [
        ("agents", "name", "agentsPerCompany", 3),  # two made by make_tenant
        ("projects", "name", "projectsPerCompany", 2),  # one made by make_tenant
        ("goals", "title", "goalsPerCompany", 1),
    ],
)
async def test_the_directory_quotas_are_per_company(
    client: Client, world: World, listing: str, field: str, quota: str, limit: int
) -> None:
    created = f"/api/companies/{world.a.company_id}/{listing}"
    await call(client, "POST", created, world.a.board, {field: "within"}, 201)
    err = await call(client, "POST", created, world.a.board, {field: "over"}, 422)
    assert err["details"] == {"quota": quota, "limit": limit}
    await call(
        client, "POST", f"/api/companies/{world.b.company_id}/{listing}", world.b.board, {field: "b"}, 201
    )


async def test_the_board_token_quota_does_not_count_revoked_tokens(client: Client, world: World) -> None:
    tokens = f"/api/companies/{world.a.company_id}/board-tokens"
    extra = await call(client, "POST", tokens, world.a.board, {"name": "2"}, 201)
    err = await call(client, "POST", tokens, world.a.board, {"name": "3"}, 422)
    assert err["details"] == {"quota": "boardTokensPerCompany", "limit": 2}
    await call(client, "POST", f"/api/board-tokens/{extra['id']}/revoke", world.a.board, None, 200)
    await call(client, "POST", tokens, world.a.board, {"name": "3"}, 201)


async def test_quota_holds_under_concurrent_creates(stack: Stack, admin_token: str) -> None:
    """Twenty simultaneous creates against a quota of 5: exactly 5 succeed (the count and the
    insert are serialised per company)."""
    async with TestClient(served(api_app(stack, quota_goals_per_company=5))) as client:
        a = await make_tenant(client, admin_token, "A")
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/api/companies/{a.company_id}/goals",
                    json={"title": f"g{n}"},
                    headers={"Authorization": f"Bearer {a.board}"},
                )
                for n in range(20)
            )
        )
        assert sorted(r.status for r in answers) == [201] * 5 + [422] * 15
