"""A 3-node NATS cluster, streams at R3, per-service NATS users: SIGKILL the runs stream's leader
under mixed load → nothing lost, no duplicate run or issue, every run decided, services reconnect.

Runs are recorded while no dispatcher runs, the leader is killed, and only then do dispatchers
start: every run JetStream acknowledged must come out of the surviving replicas (at R1 they were
on the killed server). The sweeper (SWEEP_AFTER_SEC) decides only runs whose publish failed
during the election, and the test checks it decided no more than those."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from shared.bootstrap import create_instance_admin_token
from shared.bus import RUNS_STREAM, Subjects
from tests.production.servers import NATS_PASSWORDS, NatsCluster
from tests.support import ServiceProcess, Stack, start_service, wait_until

pytestmark = pytest.mark.production

WEBHOOK_ROUTINES = 4
FIRES_PER_PHASE = 120


def env_for(stack: Stack, cluster: NatsCluster, service: str, **extra: Any) -> dict[str, str]:
    return stack.env(
        nats_url=cluster.url,
        nats_stream_replicas=3,
        nats_user=f"routines-{service}",
        nats_password=NATS_PASSWORDS[service],
        manual_run_wait_sec=0,
        sweep_after_sec=20,
        sweep_interval_sec=1,
        **extra,
    )


async def admin_connection(cluster: NatsCluster) -> NATS:
    return await nats.connect(
        servers=cluster.url.split(","),
        user="routines-admin",
        password="test-admin-pw",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json()


async def _metric(http: aiohttp.ClientSession, service: ServiceProcess, name: str) -> float:
    async with http.get(service.url + "/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_stream_leader_killed_under_load_loses_nothing(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    cluster = NatsCluster(tmp_path / "nats-cluster")
    cluster.start()
    services: list[ServiceProcess] = []
    try:
        admin_nc = await admin_connection(cluster)
        js = admin_nc.jetstream(timeout=5)

        async def jetstream_up() -> bool:
            try:
                await js.account_info()
                return True
            except (nats.errors.Error, TimeoutError):
                return False

        await wait_until(jetstream_up, timeout=30, interval=0.2)
        admin = await create_instance_admin_token(stack.database_url, "cluster")
        api = start_service("api", env_for(stack, cluster, "api"), tmp_path)
        gateway = start_service("webhook-gateway", env_for(stack, cluster, "webhook-gateway"), tmp_path)
        scheduler = start_service("scheduler", env_for(stack, cluster, "scheduler"), tmp_path)
        services += [api, gateway, scheduler]

        async def stream_at_r3() -> bool:
            try:
                info = await js.stream_info(RUNS_STREAM)
            except (nats.errors.Error, TimeoutError):
                return False
            return (
                info.config.num_replicas == 3 and info.cluster is not None and info.cluster.leader is not None
            )

        await wait_until(stream_at_r3, timeout=30, interval=0.2)

        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {admin}"}
            async with http.post(api.url + "/api/companies", json={"name": "C"}, headers=headers) as r:
                cid = (await _json(r))["id"]
            async with http.post(
                f"{api.url}/api/companies/{cid}/agents", json={"name": "a"}, headers=headers
            ) as r:
                agent_id = (await _json(r))["agent"]["id"]
            async with http.post(
                f"{api.url}/api/companies/{cid}/projects", json={"name": "p"}, headers=headers
            ) as r:
                project_id = (await _json(r))["id"]
            hooks: list[tuple[str, str]] = []
            routine_ids: list[str] = []
            for i in range(WEBHOOK_ROUTINES):
                policy = "coalesce_if_active" if i % 2 else "always_enqueue"
                body = {
                    "title": f"r{i}",
                    "assigneeAgentId": agent_id,
                    "projectId": project_id,
                    "concurrencyPolicy": policy,
                }
                async with http.post(
                    f"{api.url}/api/companies/{cid}/routines", json=body, headers=headers
                ) as r:
                    routine_ids.append((await _json(r))["id"])
                async with http.post(
                    f"{api.url}/api/routines/{routine_ids[-1]}/triggers",
                    json={"kind": "webhook"},
                    headers=headers,
                ) as r:
                    hook = await _json(r)
                    hooks.append((hook["publicId"], hook["secret"]))

            accepted: list[str] = []
            failures: list[tuple[int, Any]] = []

            async def one(i: int) -> None:
                # Mixed: webhook fires through the gateway, manual runs through the API.
                try:
                    if i % 3 == 0:
                        url = f"{api.url}/api/routines/{routine_ids[i % WEBHOOK_ROUTINES]}/run"
                        async with http.post(url, json={"payload": {"i": i}}, headers=headers) as r:
                            status, body = r.status, await _json(r)
                    else:
                        public_id, secret = hooks[i % WEBHOOK_ROUTINES]
                        url = f"{gateway.url}/api/routine-triggers/public/{public_id}/fire"
                        async with http.post(
                            url, json={"i": i}, headers={"Authorization": f"Bearer {secret}"}
                        ) as r:
                            status, body = r.status, await _json(r)
                except aiohttp.ClientError as exc:
                    failures.append((0, repr(exc)))
                    return
                if status in (200, 202):
                    accepted.append(body.get("runId") or body["id"])
                else:
                    failures.append((status, body))

            async def load(start: int, count: int, concurrency: int = 8) -> None:
                queue = iter(range(start, start + count))

                async def worker() -> None:
                    for i in queue:
                        await one(i)

                await asyncio.gather(*(worker() for _ in range(concurrency)))

            # Phase 1: load with no dispatcher; kill the runs stream's leader a third of the way in.
            info = await js.stream_info(RUNS_STREAM)
            assert info.cluster is not None
            leader = cluster.node(str(info.cluster.leader))
            first = asyncio.create_task(load(0, FIRES_PER_PHASE))
            await wait_until(
                lambda: _gte(len(accepted) if not first.done() else 10**9, FIRES_PER_PHASE // 3),
                timeout=60,
                interval=0.02,
            )
            if first.done():
                await first  # surfaces a failure of the load itself
            cluster.kill(leader)
            await first

            async def new_leader() -> str | None:
                try:
                    info = await js.stream_info(RUNS_STREAM)
                except (nats.errors.Error, TimeoutError):
                    return None
                elected = info.cluster.leader if info.cluster else None
                return elected if elected and elected != leader.name else None

            await wait_until(new_leader, timeout=30, interval=0.2)
            in_stream = (await js.stream_info(RUNS_STREAM)).state.messages
            phase1 = len(accepted)
            assert in_stream <= phase1

            # Phase 2: dispatchers start (and consume from the surviving replicas) while the load
            # goes on and the killed server comes back.
            dispatchers = [
                start_service("run-dispatcher", env_for(stack, cluster, "run-dispatcher"), tmp_path)
                for _ in range(2)
            ]
            services += dispatchers
            second = asyncio.create_task(load(FIRES_PER_PHASE, FIRES_PER_PHASE))
            cluster.start_node(leader)
            await second

            async def all_decided() -> bool:
                undecided = await db.fetchval(
                    "SELECT count(*) FROM routine_runs WHERE id = ANY($1::uuid[]) AND status = 'received'",
                    accepted,
                )
                return undecided == 0

            await wait_until(all_decided, timeout=90, interval=0.5)

            # Nothing lost, nothing twice.
            assert failures == [] or all(s in (0, 503) for s, _ in failures), failures[:5]
            assert len(set(accepted)) == len(accepted)
            assert await db.fetchval("SELECT count(*) FROM routine_runs") == len(accepted)
            assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'") == 0
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM (SELECT origin_run_id FROM issues GROUP BY 1 HAVING count(*) > 1) d"
                )
                == 0
            )
            # Each always_enqueue run has its own issue; coalesce runs link to an issue.
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM routine_runs WHERE status IN ('issue_created', 'coalesced') AND linked_issue_id IS NULL"
                )
                == 0
            )
            # JetStream kept every message it acknowledged: the sweeper decided only runs whose
            # publish failed while the stream had no leader (at most phase-1 runs not in the stream,
            # plus phase-2 ones that did not reach it).
            swept = sum(
                [await _metric(http, d, "routines_dispatcher_sweeper_pickups_total") for d in dispatchers]
            )
            assert swept <= (phase1 - in_stream) + (len(accepted) - phase1), (swept, phase1, in_stream)
            assert in_stream > 0

            # Every service is connected to NATS again, by itself.
            async def all_connected() -> bool:
                for service in services:
                    async with http.get(service.url + "/readyz") as r:
                        if (await r.json()).get("nats") != "ok":
                            return False
                return True

            await wait_until(all_connected, timeout=30, interval=0.2)
            for service in services:
                assert await _metric(http, service, "routines_nats_connected") == 1
                # Each service's NATS user allows everything the service does (deploy/nats).
                assert "permissions violation" not in service.logs().lower(), service.logs()[-2000:]

        # Permissions: the gateway's user may not wake agents or touch another consumer.
        gw_nc = await nats.connect(
            servers=cluster.url.split(","),
            user="routines-webhook-gateway",
            password=NATS_PASSWORDS["webhook-gateway"],
        )
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        gw_nc._error_cb = on_error  # the permission violation arrives asynchronously
        try:
            await gw_nc.publish(Subjects.agent_wakeup("00000000-0000-0000-0000-000000000000"), b"{}")
            await gw_nc.flush()
            await wait_until(lambda: _gte(len(errors), 1), timeout=5)
            assert "permissions violation" in repr(errors[0]).lower()
        finally:
            await gw_nc.close()
        await admin_nc.close()
    finally:
        for service in services:
            service.kill()
        cluster.stop()


async def _gte(a: int, b: int) -> bool:
    return a >= b
