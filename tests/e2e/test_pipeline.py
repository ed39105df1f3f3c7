"""The run pipeline end to end with real processes: API, dispatcher, NATS outages, crashes."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.bootstrap import create_instance_admin_token
from shared.devservers import NatsServer
from tests.support import ServiceProcess, Stack, start_service, wait_until

pytestmark = pytest.mark.e2e


async def _post(
    http: aiohttp.ClientSession, url: str, token: str, body: object
) -> tuple[int, dict[str, object]]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def _setup(
    http: aiohttp.ClientSession, api: ServiceProcess, admin: str, policy: str
) -> tuple[str, str, str]:
    _, company = await _post(http, api.url + "/api/companies", admin, {"name": "E2E"})
    cid = company["id"]
    _, agent = await _post(http, f"{api.url}/api/companies/{cid}/agents", admin, {"name": "bot"})
    _, project = await _post(http, f"{api.url}/api/companies/{cid}/projects", admin, {"name": "p"})
    agent_id = agent["agent"]["id"]
    status, routine = await _post(
        http,
        f"{api.url}/api/companies/{cid}/routines",
        admin,
        {
            "title": "Nightly",
            "assigneeAgentId": agent_id,
            "projectId": project["id"],
            "concurrencyPolicy": policy,
        },
    )
    assert status == 201
    return str(cid), str(routine["id"]), str(agent["apiKey"])


async def _sweeper_pickups(http: aiohttp.ClientSession, dispatcher: ServiceProcess) -> float:
    async with http.get(dispatcher.url + "/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("routines_dispatcher_sweeper_pickups_total ")]
    return float(line.split()[1])


async def test_manual_run_creates_an_issue_and_done_completes_the_run(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    admin = await create_instance_admin_token(stack.database_url, "e2e")
    api = start_service("api", stack.env(), tmp_path)
    dispatcher = start_service("run-dispatcher", stack.env(), tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            cid, routine_id, agent_key = await _setup(http, api, admin, "coalesce_if_active")
            status, run = await _post(
                http, f"{api.url}/api/routines/{routine_id}/run", admin, {"payload": {"k": "v"}}
            )
            assert status == 202
            assert run["status"] == "issue_created"
            issue_id = run["linkedIssueId"]
            async with http.get(
                f"{api.url}/api/companies/{cid}/issues?status=todo",
                headers={"Authorization": f"Bearer {agent_key}"},
            ) as resp:
                assert [i["id"] for i in await resp.json()] == [issue_id]
            async with http.patch(
                f"{api.url}/api/issues/{issue_id}",
                json={"status": "done"},
                headers={"Authorization": f"Bearer {agent_key}"},
            ) as resp:
                assert resp.status == 200
            assert (
                await db.fetchval("SELECT status FROM routine_runs WHERE id = $1::uuid", run["id"])
                == "completed"
            )
    finally:
        api.kill()
        dispatcher.kill()


@pytest.mark.parametrize("nats_back", [True, False], ids=["nats-restarted", "nats-left-down"])
async def test_runs_made_while_nats_is_down_are_all_decided(
    stack: Stack, nats_server: NatsServer, tmp_path: Path, db: asyncpg.Connection, nats_back: bool
) -> None:
    admin = await create_instance_admin_token(stack.database_url, "e2e")
    # The sweeper waits 8 s: long enough for JetStream to decide a run once NATS is back.
    env = stack.env(manual_run_wait_sec=0.2, sweep_after_sec=8, sweep_interval_sec=0.5)
    api = start_service("api", env, tmp_path)
    dispatcher = start_service("run-dispatcher", env, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            _, routine_id, _ = await _setup(http, api, admin, "always_enqueue")
            nats_server.stop()
            answers = [
                await _post(http, f"{api.url}/api/routines/{routine_id}/run", admin, {}) for _ in range(20)
            ]
            assert [(s, r["status"]) for s, r in answers] == [(202, "received")] * 20
            if nats_back:
                nats_server.start()

            async def all_decided() -> bool:
                return bool(
                    await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'issue_created'")
                    == 20
                )

            # Whether NATS came back or not, Postgres is the outbox: every accepted run is decided.
            await wait_until(all_decided, timeout=30)
            assert await db.fetchval("SELECT count(*) FROM issues") == 20
            if nats_back:
                # The NATS path itself recovered: a new run is decided by the JetStream consumer,
                # not by the sweeper (whose count of pickups stays where it was).
                swept = await _sweeper_pickups(http, dispatcher)
                _, run = await _post(http, f"{api.url}/api/routines/{routine_id}/run", admin, {})

                async def decided() -> bool:
                    return bool(
                        await db.fetchval(
                            "SELECT decided_at IS NOT NULL FROM routine_runs WHERE id = $1::uuid", run["id"]
                        )
                    )

                await wait_until(decided, timeout=30)
                assert await _sweeper_pickups(http, dispatcher) == swept
            else:
                nats_server.start()
    finally:
        api.kill()
        dispatcher.kill()


async def test_two_dispatchers_one_killed_mid_stream_decide_each_run_once(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    from shared.bus import Bus
    from shared.runs import publish_run_requested
    from tests.factories import make_routine, make_world

    world = await make_world(db)
    routines = [await make_routine(db, world, "coalesce_if_active") for _ in range(10)]
    env = stack.env(sweep_after_sec=5)
    first = start_service("run-dispatcher", env, tmp_path)
    second = start_service("run-dispatcher", env, tmp_path)
    bus = Bus(stack.nats_url, "e2e")
    await bus.connect_forever()
    try:
        run_ids = await db.fetch(
            "INSERT INTO routine_runs (routine_id, company_id, source) "
            "SELECT r, $2, 'api' FROM unnest($1::uuid[]) r, generate_series(1, 50) RETURNING id, routine_id",
            routines,
            world.company_id,
        )
        for i, row in enumerate(run_ids):
            await publish_run_requested(bus, row["id"], row["routine_id"])
            if i == 150:
                first.stop(signal.SIGKILL)

        async def all_decided() -> bool:
            return not await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'")

        try:
            await wait_until(all_decided, timeout=60)
        except AssertionError:
            print(await db.fetch("SELECT status, count(*) FROM routine_runs GROUP BY status"))
            print(second.logs()[-4000:])
            raise
        assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE decided_at IS NULL") == 0
        per_routine = await db.fetch("SELECT origin_id, count(*) AS n FROM issues GROUP BY origin_id")
        assert {r["n"] for r in per_routine} == {1}
        assert len(per_routine) == 10
        assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'coalesced'") == 490
        # Per issue: its run created it, the other 49 coalesced into it, each counted once on it
        # (a run decided twice — once by each dispatcher — would count twice).
        issues = await db.fetch(
            "SELECT i.id, i.origin_id, i.origin_run_id, i.coalesced_fire_count, i.coalesced_fires,"
            " (SELECT count(*) FROM routine_runs r WHERE r.linked_issue_id = i.id AND r.status = 'coalesced'"
            "  AND r.coalesced_into_run_id = i.origin_run_id AND r.routine_id = i.origin_id) AS linked"
            " FROM issues i"
        )
        assert sorted(r["origin_id"] for r in issues) == sorted(routines)
        for issue in issues:
            assert (issue["coalesced_fire_count"], issue["linked"]) == (49, 49)
            fired = [f["runId"] for f in issue["coalesced_fires"]]
            assert len(fired) == len(set(fired)) == 49
            coalesced_runs = await db.fetch(
                "SELECT id::text FROM routine_runs WHERE linked_issue_id = $1 AND status = 'coalesced'",
                issue["id"],
            )
            assert set(fired) == {r["id"] for r in coalesced_runs}
    finally:
        await bus.close()
        first.kill()
        second.kill()
