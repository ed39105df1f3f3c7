"""The agent toolkit against real services: the typed client, the CLI, the MCP server over stdio,
and wake-ups over Server-Sent Events that resume without loss or repetition."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from routines_client import AsyncRoutinesClient, NotFound, Unprocessable, new_idempotency_key, paginate
from routines_client.transport import Transport
from routines_client.wakeups import follow_wakeups, read_events
from shared.bootstrap import create_instance_admin_token
from shared.bus import EVENTS_STREAM
from tests.clients.tenant import Tenant, create_tenant
from tests.support import Stack, start_service, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class World(Tenant):
    """The company the toolkit works in, as its agent."""

    def cli_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
        return {
            **env,
            "ROUTINES_API_URL": self.api.url,
            "ROUTINES_GATEWAY_URL": self.gateway.url,
            "ROUTINES_TOKEN": self.agent_key,
            **extra,
        }


@pytest.fixture
async def world(stack: Stack, tmp_path: Path) -> AsyncIterator[World]:
    env = stack.env(sse_heartbeat_sec=1, public_gateway_url="http://127.0.0.1:1")
    api = start_service("api", env, tmp_path)
    gateway = start_service("webhook-gateway", env, tmp_path)
    dispatcher = start_service("run-dispatcher", env, tmp_path)
    try:
        tenant = await create_tenant(
            stack.database_url, api, gateway, company="Toolkit", agent="agent", project="ops"
        )
        yield World(**vars(tenant))
    finally:
        for process in (api, gateway, dispatcher):
            process.kill()


async def test_typed_client_drives_routines_triggers_runs_and_webhooks(world: World) -> None:
    async with AsyncRoutinesClient(world.api.url, world.agent_key, gateway_url=world.gateway.url) as client:
        me = await client.agent_me()
        assert str(me.id) == world.agent_id
        routine = await client.create_routine(
            me.company_id,
            {
                "title": "Digest",
                "projectId": world.project_id,
                "assigneeAgentId": world.agent_id,
                "concurrencyPolicy": "always_enqueue",
            },
        )
        assert routine.concurrency_policy == "always_enqueue"
        with pytest.raises(Unprocessable) as bad_cron:
            await client.create_trigger(routine.id, {"kind": "schedule", "cronExpression": "61 * * * *"})
        assert bad_cron.value.error == "minute field: 61 is out of range 0-59"
        with pytest.raises(NotFound):
            await client.get_routine(uuid.uuid4())

        for mode in ("bearer", "hmac_sha256", "github_hmac", "standard_webhooks"):
            trigger = await client.create_trigger(routine.id, {"kind": "webhook", "signingMode": mode})
            assert trigger.secret and trigger.public_id
            accepted = await client.send_webhook(trigger.public_id, trigger.secret, mode, {"mode": mode})
            assert accepted.status in ("received", "issue_created"), mode
            assert str(accepted.routine_id) == str(routine.id)

        key = new_idempotency_key()
        first = await client.manual_run(routine.id, {"payload": {"n": 1}, "idempotencyKey": key})
        again = await client.manual_run(routine.id, {"payload": {"n": 1}, "idempotencyKey": key})
        assert again.id == first.id
        seen = [run.id async for run in paginate(client.list_runs, routine.id, page_size=2)]
        assert first.id in seen and len(seen) == 5  # four webhooks and one manual run


async def test_send_webhook_without_gateway_url_fires_at_the_gateway_the_api_names(
    stack: Stack, world: World, tmp_path: Path
) -> None:
    """Built with the API's URL only (as the client README's first example), `send_webhook` is
    refused by the API with the gateway's URL in the details, and the client follows it."""
    api = start_service("api", stack.env(public_gateway_url=world.gateway.url), tmp_path)
    try:
        async with AsyncRoutinesClient(api.url, world.agent_key) as client:
            me = await client.agent_me()
            routine = await client.create_routine(
                me.company_id,
                {"title": "Hooked", "projectId": world.project_id, "assigneeAgentId": world.agent_id},
            )
            for mode in ("hmac_sha256", "bearer"):
                trigger = await client.create_trigger(routine.id, {"kind": "webhook", "signingMode": mode})
                assert trigger.secret and trigger.public_id
                accepted = await client.send_webhook(trigger.public_id, trigger.secret, mode, {"n": 1})
                assert str(accepted.routine_id) == str(routine.id), mode
                assert client.transport.gateway_url == world.gateway.url
        # A gateway URL given explicitly is never replaced: a wrong one fails with the API's answer.
        assert trigger.secret and trigger.public_id
        async with AsyncRoutinesClient(api.url, world.agent_key, gateway_url=api.url) as client:
            with pytest.raises(NotFound) as refused:
                await client.send_webhook(trigger.public_id, trigger.secret, "bearer", {"n": 2})
            assert refused.value.details["gatewayUrl"] == world.gateway.url
    finally:
        api.kill()


def _cli(world: World, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=world.cli_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


async def test_cli_commands_print_tables_json_and_clear_errors(world: World) -> None:
    created = _cli(world, "routine", "create", "--title", "From CLI", "--project", world.project_id, "--json")
    assert created.returncode == 0, created.stderr
    routine_id = json.loads(created.stdout)["id"]

    listed = _cli(world, "routine", "list")
    assert listed.returncode == 0 and "From CLI" in listed.stdout and "TITLE" in listed.stdout

    added = _cli(
        world,
        "trigger",
        "add",
        routine_id,
        "--kind",
        "schedule",
        "--cron",
        "0 9 * * 1-5",
        "--timezone",
        "Europe/Amsterdam",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["nextRunAt"]

    ran = _cli(world, "run", routine_id, "--payload", '{"why": "cli"}', "--idempotency-key", "k-1", "--json")
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["payload"] == {"why": "cli"}
    runs = _cli(world, "runs", routine_id, "--json")
    assert [r["id"] for r in json.loads(runs.stdout)] == [run["id"]]

    preview = _cli(world, "cron", "preview", "30 8 * * *", "--tz", "Asia/Tokyo", "--count", "2", "--json")
    assert preview.returncode == 0 and len(json.loads(preview.stdout)["fires"]) == 2
    # Without --json the fires are a table, one full row per fire (not a JSON cell cut short).
    table = _cli(world, "cron", "preview", "30 8 * * *", "--tz", "Asia/Tokyo", "--count", "2")
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines() if line.endswith("+09:00  -")]
    assert len(rows) == 2, table.stdout
    assert all(row[0].endswith("T23:30:00Z") and row[1].endswith("T08:30:00+09:00") for row in rows)

    paused = _cli(world, "routine", "pause", routine_id, "--json")
    assert json.loads(paused.stdout)["status"] == "paused"

    missing = _cli(world, "routine", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and missing.stderr.startswith("routines: 404 ")
    unreachable = _cli(world, "routine", "list", ROUTINES_API_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach the API" in unreachable.stderr
    no_token = _cli(world, "routine", "list", ROUTINES_TOKEN="")
    assert no_token.returncode == 2 and "ROUTINES_TOKEN" in no_token.stderr


async def test_cli_runs_follow_prints_each_run_once_per_status(world: World) -> None:
    """`routines runs ROUTINE --follow` prints the runs it listed first, then only new runs and
    status changes: never a run again with the status it was already printed with."""
    created = _cli(world, "routine", "create", "--title", "Followed", "--project", world.project_id, "--json")
    assert created.returncode == 0, created.stderr
    routine_id = json.loads(created.stdout)["id"]
    before = [_cli(world, "run", routine_id, "--json") for _ in range(2)]
    assert all(r.returncode == 0 for r in before), [r.stderr for r in before]
    command = ["runs", routine_id, "--follow", "--limit", "5", "--interval", "0.2"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *command],
        env=world.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    first_ids = {json.loads(r.stdout)["id"] for r in before}
    seen: list[str] = []

    async def printed(wanted: set[str]) -> None:  # read the follower's lines until these ids are in
        assert follow.stdout is not None
        while not wanted <= {line.split()[0] for line in seen if line.strip()}:
            line = await asyncio.wait_for(asyncio.to_thread(follow.stdout.readline), 30)
            assert line, "the follower ended"
            seen.append(line)

    try:
        await printed(first_ids)  # the first listing (a cold CLI start can take seconds)
        await asyncio.sleep(0.6)  # several polls with nothing new
        after = _cli(world, "run", routine_id, "--json")
        assert after.returncode == 0, after.stderr
        new_run = json.loads(after.stdout)
        await printed({new_run["id"]})
        await asyncio.sleep(1.0)  # five more polls: time to print anything twice
    finally:
        follow.terminate()
        rest, err = follow.communicate(timeout=10)
    out = "".join(seen) + rest
    rows = [line.split() for line in out.splitlines() if line and not line.startswith("ID")]
    printed_rows = [(row[0], row[2]) for row in rows]
    assert len(printed_rows) == len(set(printed_rows)), out
    ids = [run_id for run_id, _ in printed_rows]
    assert {run_id for run_id in ids if run_id in first_ids} == first_ids
    assert new_run["id"] in ids, out + err


async def test_mcp_server_over_stdio_with_the_sdk_client(world: World) -> None:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "shared.cli", "mcp"], env=world.cli_env(), cwd=str(ROOT)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {
            "list_routines",
            "get_routine",
            "create_routine",
            "update_routine",
            "add_trigger",
            "update_trigger",
            "delete_trigger",
            "preview_cron",
            "run_routine",
            "list_runs",
        } <= set(tools)
        assert "coalesce_if_active" in json.dumps(tools["create_routine"].input_schema)

        async def call(name: str, **arguments: Any) -> Any:
            result = await session.call_tool(name, arguments)
            assert not result.is_error, result.content
            return json.loads(result.content[0].text)  # type: ignore[union-attr]

        routine = await call("create_routine", title="MCP made", project_id=world.project_id)
        trigger = await call(
            "add_trigger",
            routine_id=routine["id"],
            kind="schedule",
            cron_expression="*/15 * * * *",
            timezone="UTC",
        )
        assert trigger["nextRunAt"]
        preview = await call("preview_cron", cron_expression="0 12 * * *", timezone="Europe/Paris", count=3)
        assert len(preview["fires"]) == 3
        run = await call("run_routine", routine_id=routine["id"], payload={"from": "mcp"})
        assert run["status"] in ("received", "issue_created")
        assert [r["id"] for r in (await call("list_runs", routine_id=routine["id"]))["runs"]] == [run["id"]]
        listed = await call("list_routines")
        assert routine["id"] in [r["id"] for r in listed["routines"]]
        detail = await call("get_routine", routine_id=routine["id"])
        assert [t["id"] for t in detail["triggers"]] == [trigger["id"]]

        failed = await session.call_tool(
            "add_trigger", {"routine_id": routine["id"], "kind": "schedule", "cron_expression": "0 25 * * *"}
        )
        assert failed.is_error
        assert "422" in failed.content[0].text  # type: ignore[union-attr]


async def _open_stream(
    url: str, key: str, last_event_id: str | None = None
) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    response = await session.get(url + "/api/agents/me/wakeups", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return session, response


async def test_wakeups_stream_resumes_after_a_disconnect_on_another_replica(
    world: World, stack: Stack, tmp_path: Path
) -> None:
    second_api = start_service("api", stack.env(sse_heartbeat_sec=1), tmp_path)
    try:
        async with AsyncRoutinesClient(world.api.url, world.agent_key) as client:
            routine = await client.create_routine(
                world.company_id,
                {
                    "title": "Wake me",
                    "projectId": world.project_id,
                    "assigneeAgentId": world.agent_id,
                    "concurrencyPolicy": "always_enqueue",
                },
            )
            session, response = await _open_stream(world.api.url, world.agent_key)
            events = read_events(response)
            runs, first_two = [], []
            for i in range(2):  # one at a time: each its own wake-up
                runs.append(await client.manual_run(routine.id, {"payload": {"i": i}}))
                first_two.append(await asyncio.wait_for(anext(events), 15))
            runs.append(await client.manual_run(routine.id, {"payload": {"i": 2}}))
            response.close()  # the agent drops mid-stream, the third run's wake-up unread
            await session.close()
            runs += [await client.manual_run(routine.id, {"payload": {"i": i}}) for i in range(3, 5)]

            session, response = await _open_stream(second_api.url, world.agent_key, first_two[-1]["id"])
            events = read_events(response)
            rest: list[dict[str, Any]] = []
            # Issues created by one decision are one wake-up: read until every run is named.
            while sum(len(e["data"]["runIds"]) for e in first_two + rest) < len(runs):
                rest.append(await asyncio.wait_for(anext(events), 15))
            response.close()
            await session.close()
    finally:
        second_api.kill()
    received = [run for e in first_two + rest for run in e["data"]["runIds"]]
    assert received == [str(r.id) for r in runs]  # every run's wake-up once, in order
    assert all(e["event"] == "wakeup" and e["data"]["reason"] == "issue_created" for e in first_two + rest)
    ids = [int(e["id"]) for e in first_two + rest]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_wakeups_stream_the_agent_closes_ends_quietly_not_as_a_500(
    world: World, stack: Stack, tmp_path: Path
) -> None:
    """Every stream ends with the client going away; the next write found the connection reset,
    and that was logged as an unhandled error with a traceback and counted as a 500 (feeding the
    5xx alert) — once per agent disconnect."""
    api = start_service("api", stack.env(sse_heartbeat_sec=0.2), tmp_path)
    try:
        session, response = await _open_stream(api.url, world.agent_key)
        response.close()
        await session.close()
        await asyncio.sleep(1.5)  # several heartbeats: the first write after the close fails
        async with aiohttp.ClientSession() as http, http.get(api.url + "/metrics") as metrics:
            exposition = await metrics.text()
    finally:
        api.stop()
    answers = [
        line
        for line in exposition.splitlines()
        if line.startswith("routines_http_requests_total") and "/api/agents/me/wakeups" in line
    ]
    assert answers and all('status="200"' in line for line in answers), answers
    assert "unhandled error" not in api.log_path.read_text()


async def test_wakeups_stream_sends_heartbeats_and_refuses_non_agents(world: World, stack: Stack) -> None:
    session, response = await _open_stream(world.api.url, world.agent_key)
    try:
        chunk = await asyncio.wait_for(response.content.readuntil(b": ping\n\n"), 10)
        assert chunk.endswith(b": ping\n\n")
    finally:
        response.close()
        await session.close()
    admin = await create_instance_admin_token(stack.database_url, "not-an-agent")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            world.api.url + "/api/agents/me/wakeups", headers={"Authorization": f"Bearer {admin}"}
        ) as r:
            assert r.status == 403
            assert "agent" in (await r.json())["error"]
        async with http.get(
            world.api.url + "/api/agents/me/wakeups",
            headers={"Authorization": f"Bearer {world.agent_key}", "Last-Event-ID": "abc"},
        ) as r:
            assert r.status == 400


async def test_client_follow_wakeups_yields_events(world: World, stack: Stack) -> None:
    nc = await nats.connect(stack.nats_url)
    try:
        events = nc.jetstream()

        async def consumers() -> int:
            return int((await events.stream_info(EVENTS_STREAM)).state.consumer_count)

        async with AsyncRoutinesClient(world.api.url, world.agent_key) as client:
            routine = await client.create_routine(
                world.company_id,
                {"title": "Follow", "projectId": world.project_id, "assigneeAgentId": world.agent_id},
            )
            before = await consumers()
            follower = follow_wakeups(Transport(world.api.url, world.agent_key), max_events=1)
            pending = asyncio.ensure_future(anext(follower))
            # The stream follows new wake-ups only: publish once the API has subscribed for it.
            await wait_until(lambda: _more(consumers(), before), timeout=15, interval=0.02)
            run = await client.manual_run(routine.id, {})
            event = await asyncio.wait_for(pending, 15)
            assert event["data"]["runId"] == str(run.id)
            await follower.aclose()
    finally:
        await nc.close()


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)
