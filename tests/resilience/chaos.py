"""A small fleet of real service processes, a mixed load, and the database checks afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from shared.directory import create_instance_admin_token
from tests.support import ServiceProcess, Stack, start_service

CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass
class Hook:
    routine_id: str
    policy: str
    public_id: str
    mode: str
    secret: str


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key → run id
    statuses: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    mismatched_retries: int = 0
    slowest: float = 0.0

    def saw(self, status: int, elapsed: float) -> None:
        self.statuses[status] += 1
        self.slowest = max(self.slowest, elapsed)


class Fleet:
    """API + N replicas of gateway, scheduler and dispatcher, restartable one by one."""

    def __init__(self, stack: Stack, tmp_path: Path, replicas: int = 2, **settings: Any) -> None:
        self.env = stack.env(**settings)
        self.tmp_path = tmp_path
        self.api = start_service("api", self.env, tmp_path)
        self.replicas: dict[str, list[ServiceProcess]] = {
            name: [start_service(name, self.env, tmp_path) for _ in range(replicas)]
            for name in ("webhook-gateway", "scheduler", "run-dispatcher")
        }
        self.kills = 0

    @property
    def gateways(self) -> list[ServiceProcess]:
        return self.replicas["webhook-gateway"]

    def all(self) -> list[ServiceProcess]:
        return [self.api, *itertools.chain.from_iterable(self.replicas.values())]

    async def chaos(self, stop: asyncio.Event, every: float = 4.0) -> None:
        """SIGKILL a random replica every few seconds and start it again."""
        rng = random.Random(7)
        while not stop.is_set():
            await asyncio.sleep(every * rng.uniform(0.5, 1.5))
            if stop.is_set():
                break
            victim = rng.choice([p for group in self.replicas.values() for p in group])
            victim.kill()
            self.kills += 1
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(victim.start)

    def ensure_all_running(self) -> None:
        for process in self.all():
            if process.proc is None or process.proc.poll() is not None:
                process.start()

    def stop(self) -> None:
        for process in self.all():
            process.kill()


async def setup_world(
    stack: Stack, api: ServiceProcess, webhooks: int = 12, schedules: int = 20
) -> tuple[str, list[Hook], list[str]]:
    """Routines under every policy with webhook triggers (bearer and hmac), plus schedule routines."""
    admin = await create_instance_admin_token(stack.database_url, "chaos")
    auth = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=auth) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(path, json=body) as resp:
                assert resp.status in (200, 201), await resp.text()
                return await resp.json()

        company = (await post("/api/companies", {"name": "Chaos"}))["id"]
        agent = (await post(f"/api/companies/{company}/agents", {"name": "a"}))["agent"]["id"]
        project = (await post(f"/api/companies/{company}/projects", {"name": "p"}))["id"]
        hooks = []
        policies = ["coalesce_if_active", "skip_if_active", "always_enqueue"]
        for i in range(webhooks):
            policy = policies[i % 3]
            routine = await post(
                f"/api/companies/{company}/routines",
                {
                    "title": f"hook {i}",
                    "assigneeAgentId": agent,
                    "projectId": project,
                    "concurrencyPolicy": policy,
                },
            )
            mode = "bearer" if i % 2 else "hmac_sha256"
            trigger = await post(
                f"/api/routines/{routine['id']}/triggers", {"kind": "webhook", "signingMode": mode}
            )
            hooks.append(Hook(routine["id"], policy, trigger["publicId"], mode, trigger["secret"]))
        scheduled = []
        for i in range(schedules):
            routine = await post(
                f"/api/companies/{company}/routines",
                {
                    "title": f"cron {i}",
                    "assigneeAgentId": agent,
                    "projectId": project,
                    "concurrencyPolicy": policies[i % 3],
                    "catchUpPolicy": "enqueue_missed_with_cap",
                },
            )
            await post(
                f"/api/routines/{routine['id']}/triggers", {"kind": "schedule", "cronExpression": "* * * * *"}
            )
            scheduled.append(routine["id"])
    return admin, hooks, scheduled


def signed_headers(hook: Hook, body: bytes, key: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    if hook.mode == "bearer":
        headers["Authorization"] = f"Bearer {hook.secret}"
    else:
        ts = str(int(time.time()))
        headers["X-Paperclip-Timestamp"] = ts
        headers["X-Paperclip-Signature"] = hmac.new(
            hook.secret.encode(), ts.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
    return headers


async def fire_with_retries(
    http: aiohttp.ClientSession, fleet: Fleet, hook: Hook, tally: Tally, n: int
) -> None:
    """One logical fire: retried (re-signed, same Idempotency-Key) until some gateway answers."""
    key = f"fire-{n}-{uuid.uuid4().hex[:8]}"
    body = f'{{"n": {n}}}'.encode()
    tally.sent += 1
    for attempt in range(300):  # about a minute of retries: longer than any outage here
        gateway = fleet.gateways[(n + attempt) % len(fleet.gateways)]
        started = time.monotonic()
        try:
            async with http.post(
                f"{gateway.url}/api/routine-triggers/public/{hook.public_id}/fire",
                data=body,
                headers=signed_headers(hook, body, key),
            ) as resp:
                tally.saw(resp.status, time.monotonic() - started)
                if resp.status in (200, 202):
                    run_id = (await resp.json())["runId"]
                    if key in tally.accepted and tally.accepted[key] != run_id:
                        tally.mismatched_retries += 1
                    tally.accepted[key] = run_id
                    return
                assert resp.status in (429, 503), (resp.status, await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            pass
        tally.retries += 1
        await asyncio.sleep(0.2)


async def manual_run_with_retries(
    http: aiohttp.ClientSession, fleet: Fleet, admin: str, routine_id: str, tally: Tally, n: int
) -> None:
    key = f"manual-{n}-{uuid.uuid4().hex[:8]}"
    tally.sent += 1
    for _ in range(300):
        started = time.monotonic()
        try:
            async with http.post(
                f"{fleet.api.url}/api/routines/{routine_id}/run",
                json={"idempotencyKey": key},
                headers={"Authorization": f"Bearer {admin}"},
            ) as resp:
                tally.saw(resp.status, time.monotonic() - started)
                if resp.status in (200, 202):
                    tally.accepted[key] = (await resp.json())["id"]
                    return
                assert resp.status == 503, (resp.status, await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            pass
        tally.retries += 1
        await asyncio.sleep(0.2)


async def mixed_load(
    fleet: Fleet, admin: str, hooks: list[Hook], seconds: float, rate: float, tally: Tally
) -> None:
    """Webhook fires and manual runs at about `rate` per second for `seconds`."""
    deadline = time.monotonic() + seconds
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        for n in itertools.count():
            if time.monotonic() > deadline:
                break
            hook = hooks[n % len(hooks)]
            if n % 5 == 4:
                coro = manual_run_with_retries(http, fleet, admin, hook.routine_id, tally, n)
            else:
                coro = fire_with_retries(http, fleet, hook, tally, n)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(1 / rate)
        if tasks:
            await asyncio.gather(*tasks)


async def replay_schedules(db: asyncpg.Connection, stop: asyncio.Event) -> None:
    """Every few seconds move schedule triggers back a few slots, so schedulers race over due slots."""
    while not stop.is_set():
        await db.execute(
            "UPDATE routine_triggers SET next_run_at = date_trunc('minute', now()) - interval '3 minutes'"
            " WHERE kind = 'schedule'"
        )
        await asyncio.sleep(3)


async def wait_all_decided(db: asyncpg.Connection, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'"):
        assert time.monotonic() < deadline, "runs left undecided"
        await asyncio.sleep(0.5)


async def verify_database(db: asyncpg.Connection, tally: Tally, hooks: list[Hook]) -> dict[str, int]:
    """The promises, checked from Postgres; returns the summary figures."""
    keys = list(tally.accepted)
    rows = await db.fetch(
        "SELECT idempotency_key, count(*) AS n, min(id::text) AS id FROM routine_runs"
        " WHERE idempotency_key = ANY($1) GROUP BY idempotency_key",
        keys,
    )
    found = {r["idempotency_key"]: (r["n"], r["id"]) for r in rows}
    lost = [k for k in keys if k not in found]
    duplicates = sum(n - 1 for n, _ in found.values())
    wrong = [k for k in keys if k in found and found[k][1] != tally.accepted[k]]
    undecided = await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE status = 'received' OR decided_at IS NULL"
    )
    double_slots = await db.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM routine_runs WHERE scheduled_for IS NOT NULL"
        " GROUP BY trigger_id, scheduled_for HAVING count(*) > 1) x"
    )
    double_issues = await db.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM issues WHERE origin_run_id IS NOT NULL"
        " GROUP BY origin_run_id HAVING count(*) > 1) x"
    )
    orphan_created = await db.fetchval(
        "SELECT count(*) FROM routine_runs r WHERE status = 'issue_created'"
        " AND NOT EXISTS (SELECT 1 FROM issues i WHERE i.origin_run_id = r.id)"
    )
    # Nobody closes issues during the test, so a coalesce/skip routine must have exactly one.
    two_open = await db.fetchval(
        "SELECT count(*) FROM (SELECT i.origin_id FROM issues i JOIN routines r ON r.id = i.origin_id"
        " WHERE r.concurrency_policy IN ('coalesce_if_active', 'skip_if_active')"
        " AND i.status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')"
        " GROUP BY i.origin_id HAVING count(*) > 1) x"
    )
    summary = {
        "sent": tally.sent,
        "accepted": len(keys),
        "runs": int(await db.fetchval("SELECT count(*) FROM routine_runs")),
        "issues": int(await db.fetchval("SELECT count(*) FROM issues")),
        "duplicates": duplicates + int(double_slots) + int(double_issues),
        "lost": len(lost),
    }
    print(
        "\n[resilience] "
        + ", ".join(f"{k}={v}" for k, v in summary.items())
        + f", retries={tally.retries}, statuses={dict(tally.statuses)}, slowest={tally.slowest:.2f}s"
    )
    assert lost == []
    assert duplicates == 0
    assert wrong == []
    assert tally.mismatched_retries == 0
    assert undecided == 0
    assert double_slots == 0
    assert double_issues == 0
    assert orphan_created == 0
    assert two_open == 0
    assert 500 not in tally.statuses
    return summary
