"""A small fleet of real service processes, a mixed load, faults, and the checks afterwards.

Every check here can fail: they compare what the clients were told, what the agents were woken
for and which schedule slots the test's own clock says were due against what Postgres recorded.
Checks that a unique index already guarantees (one run per idempotency key, one run per slot)
are left to the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from nats.aio.msg import Msg

from routines_dispatcher.decide import DECISIONS_PER_MESSAGE
from shared.bootstrap import create_instance_admin_token
from shared.bus import Bus, Subjects
from tests.support import ServiceProcess, Stack

# A request that takes this long is a failure (a hang), never a slow success retried silently.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)
SERVICES = ("webhook-gateway", "scheduler", "run-dispatcher")
# The services' settings under chaos: fast ticks and sweeps, short waits, limits out of the way.
CHAOS_SETTINGS: dict[str, Any] = {
    "tick_interval_sec": 0.2,
    "misfire_grace_sec": 3600,
    "sweep_after_sec": 3,
    "sweep_interval_sec": 1,
    "manual_run_wait_sec": 0.5,
    "db_acquire_timeout_sec": 2,
    "rate_limit_trigger_per_sec": 1000,
    "rate_limit_client_per_sec": 5000,
}


@dataclass
class Hook:
    routine_id: str
    policy: str
    public_id: str
    mode: str
    secret: str


@dataclass
class World:
    admin: str
    company_id: str
    agent_id: str
    hooks: list[Hook]
    schedule_routines: list[str]


@dataclass
class Tally:
    """What the clients saw, and every way a request failed."""

    sent: int = 0
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key → run id
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key → payload sent
    statuses: Counter[int] = field(default_factory=Counter)
    answered_by: Counter[str] = field(default_factory=Counter)  # process label → 2xx answers
    retries: int = 0
    excused: Counter[str] = field(default_factory=Counter)  # connection errors of a process we took down
    failures: list[str] = field(default_factory=list)  # timeouts, errors from live processes, bad statuses
    in_flight: Counter[str] = field(default_factory=Counter)  # process label → requests now in flight

    def fail(self, what: str) -> None:
        if len(self.failures) < 1000:
            self.failures.append(what)

    def new_request(self, prefix: str, n: int) -> tuple[str, dict[str, Any]]:
        """The idempotency key and payload of a new logical request, counted as sent."""
        key = f"{prefix}-{n}-{uuid.uuid4().hex[:8]}"
        self.sent += 1
        self.payloads[key] = {"n": n, "key": key}
        return key, self.payloads[key]


class Fleet:
    """The API and replicas of gateway, scheduler and dispatcher; knows which it took down, when."""

    def __init__(
        self, stack: Stack, tmp_path: Path, replicas: int | dict[str, int] = 2, **settings: Any
    ) -> None:
        counts = replicas if isinstance(replicas, dict) else dict.fromkeys(SERVICES, replicas)
        self.env = stack.env(**settings)
        self.api = self._process("api", tmp_path)
        self.replicas: dict[str, list[ServiceProcess]] = {
            name: [self._process(name, tmp_path) for _ in range(counts.get(name, 0))] for name in SERVICES
        }
        self.labels = {id(p): f"{p.name}#{i}" for name, ps in self.replicas.items() for i, p in enumerate(ps)}
        self.labels[id(self.api)] = "api"
        # Start all at once (each takes seconds to import), then wait for each.
        for process in self.all():
            process.launch()
        for process in self.all():
            process.wait_listening()
            process.wait_ready()
        self.down: dict[int, list[list[float]]] = {}  # process → [start, end] (monotonic)
        self.stopped: set[int] = set()  # SIGSTOPped: a load balancer would route around it
        self.kills: list[tuple[float, str]] = []  # (wall clock, label)

    def _process(self, name: str, tmp_path: Path) -> ServiceProcess:
        from shared.devservers import free_port

        return ServiceProcess(name, self.env, tmp_path / f"{name}-{free_port()}.log")

    def label(self, process: ServiceProcess) -> str:
        return self.labels[id(process)]

    @property
    def gateways(self) -> list[ServiceProcess]:
        return self.replicas["webhook-gateway"]

    def all(self) -> list[ServiceProcess]:
        return [self.api, *itertools.chain.from_iterable(self.replicas.values())]

    def routable(self, process: ServiceProcess) -> bool:
        intervals = self.down.get(id(process), [])
        return id(process) not in self.stopped and not (intervals and intervals[-1][1] == float("inf"))

    def was_down(self, process: ServiceProcess, start: float, end: float) -> bool:
        """Whether the test had taken `process` down at some moment of [start, end] (monotonic)."""
        return any(a <= end and start <= b for a, b in self.down.get(id(process), []))

    def kill(self, process: ServiceProcess) -> None:
        self.down.setdefault(id(process), []).append([time.monotonic(), float("inf")])
        self.kills.append((time.time(), self.label(process)))
        process.kill()

    async def restart(self, process: ServiceProcess) -> None:
        await asyncio.to_thread(process.start)
        self.down[id(process)][-1][1] = time.monotonic()

    def sigstop(self, process: ServiceProcess) -> None:
        self.stopped.add(id(process))
        assert process.proc is not None
        process.proc.send_signal(signal.SIGSTOP)

    def sigcont(self, process: ServiceProcess) -> None:
        assert process.proc is not None
        process.proc.send_signal(signal.SIGCONT)
        self.stopped.discard(id(process))

    async def chaos(self, stop: asyncio.Event, every: float = 4.0) -> None:
        """SIGKILL a random gateway, scheduler or dispatcher every few seconds and start it again."""
        rng = random.Random(7)
        while not stop.is_set():
            await asyncio.sleep(every * rng.uniform(0.5, 1.5))
            if stop.is_set():
                break
            victim = rng.choice([p for group in self.replicas.values() for p in group])
            self.kill(victim)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await self.restart(victim)

    def assert_all_alive(self, when: str) -> None:
        """Every process is still running (or exited 0): no fault made a service crash."""
        dead = [
            f"{self.label(p)} exited {p.exit_code}:\n{p.logs()[-2000:]}"
            for p in self.all()
            if p.exit_code not in (None, 0)
        ]
        assert dead == [], f"after {when}: " + "\n".join(dead)

    def stop(self) -> None:
        for process in self.all():
            if id(process) in self.stopped:
                self.sigcont(process)
            process.kill()


async def setup_world(stack: Stack, api: ServiceProcess, webhooks: int = 12, schedules: int = 20) -> World:
    """Routines under every policy with webhook triggers (bearer and hmac), plus schedule routines."""
    admin = await create_instance_admin_token(stack.database_url, "chaos")
    auth = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=auth) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(path, json=body) as resp:
                assert resp.status in (200, 201), await resp.text()
                return dict(await resp.json())

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
            scheduled.append(routine["id"])
    return World(admin, company, agent, hooks, scheduled)


def signed_headers(hook: Hook, body: bytes, key: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    if hook.mode == "bearer":
        headers["Authorization"] = f"Bearer {hook.secret}"
    else:
        # Milliseconds: each retry is a new signature (a sender's re-signed retry, answered 200
        # with the original run), never a byte-for-byte replay (409).
        ts = str(int(time.time() * 1000))
        headers["X-Paperclip-Timestamp"] = ts
        headers["X-Paperclip-Signature"] = hmac.new(
            hook.secret.encode(), ts.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
    return headers


async def _attempt(
    fleet: Fleet,
    tally: Tally,
    target: ServiceProcess,
    send: Callable[[ServiceProcess], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any] | None:
    """One HTTP attempt: `send` to `target`. A timeout is always a failure; a connection error is
    one unless the test had taken the target down meanwhile."""
    label = fleet.label(target)
    started = time.monotonic()
    tally.in_flight[label] += 1
    try:
        status, body = await send(target)
    except TimeoutError:
        tally.fail(f"timeout after {time.monotonic() - started:.1f}s from {label}")
        return None
    except aiohttp.ClientError as exc:
        if fleet.was_down(target, started, time.monotonic()):
            tally.excused[label] += 1
        else:
            tally.fail(f"{type(exc).__name__} from {label}, which was up: {exc}")
        return None
    finally:
        tally.in_flight[label] -= 1
    tally.statuses[status] += 1
    if status in (200, 202):
        tally.answered_by[label] += 1
    return status, body


async def _routable(fleet: Fleet, candidates: list[ServiceProcess], n: int) -> ServiceProcess:
    """The next candidate a load balancer would route to (waits while none is up)."""
    while True:
        up = [p for p in candidates if fleet.routable(p)]
        if up:
            return up[n % len(up)]
        await asyncio.sleep(0.05)


async def _post(http: aiohttp.ClientSession, url: str, **request: Any) -> tuple[int, Any]:
    async with http.post(url, **request) as resp:
        return resp.status, await resp.json(content_type=None)


async def _until_accepted(
    fleet: Fleet,
    tally: Tally,
    targets: list[ServiceProcess],
    n: int,
    send: Callable[[ServiceProcess], Awaitable[tuple[int, Any]]],
    *,
    what: str,
    key: str,
    run_id_field: str,
    retry_on: tuple[int, ...],
) -> None:
    """`send` one logical request (idempotency key `key`) to the next routable target until it is
    accepted, recording the run its answer names; retried on a `retry_on` status or a lost answer,
    any other answer is a failure."""
    for attempt in range(300):  # about a minute of retries: longer than any outage here
        target = await _routable(fleet, targets, n + attempt)
        answer = await _attempt(fleet, tally, target, send)
        if answer is not None:
            status, data = answer
            if status in (200, 202):
                tally.accepted[key] = data[run_id_field]
                return
            if status not in retry_on:
                tally.fail(f"{what} answered {status}: {data}")
                return
        tally.retries += 1
        await asyncio.sleep(0.2)
    tally.fail(f"{what} {key} never accepted")


async def fire_with_retries(
    http: aiohttp.ClientSession, fleet: Fleet, hook: Hook, tally: Tally, n: int
) -> None:
    """One logical fire, retried (re-signed, same Idempotency-Key) on 429/503 or a lost answer."""
    key, payload = tally.new_request("fire", n)
    body = json.dumps(payload).encode()

    async def send(gateway: ServiceProcess) -> tuple[int, Any]:
        return await _post(
            http,
            f"{gateway.url}/api/routine-triggers/public/{hook.public_id}/fire",
            data=body,
            headers=signed_headers(hook, body, key),
        )

    await _until_accepted(
        fleet, tally, fleet.gateways, n, send, what="fire", key=key, run_id_field="runId", retry_on=(429, 503)
    )


async def manual_run_with_retries(
    http: aiohttp.ClientSession, fleet: Fleet, admin: str, routine_id: str, tally: Tally, n: int
) -> None:
    """One logical manual run, retried (same idempotency key) on 503 or a lost answer."""
    key, payload = tally.new_request("manual", n)

    async def send(api: ServiceProcess) -> tuple[int, Any]:
        return await _post(
            http,
            f"{api.url}/api/routines/{routine_id}/run",
            json={"idempotencyKey": key, "payload": payload},
            headers={"Authorization": f"Bearer {admin}"},
        )

    await _until_accepted(
        fleet, tally, [fleet.api], n, send, what="manual run", key=key, run_id_field="id", retry_on=(503,)
    )


async def mixed_load(fleet: Fleet, world: World, seconds: float, rate: float, tally: Tally) -> None:
    """Webhook fires and manual runs at about `rate` per second for `seconds`."""
    deadline = time.monotonic() + seconds
    tasks: set[asyncio.Task[None]] = set()
    # No keep-alive: a pooled connection to a process killed earlier must not fail a later request.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT, connector=connector) as http:
        for n in itertools.count():
            if time.monotonic() > deadline:
                break
            hook = world.hooks[n % len(world.hooks)]
            if n % 5 == 4:
                coro = manual_run_with_retries(http, fleet, world.admin, hook.routine_id, tally, n)
            else:
                coro = fire_with_retries(http, fleet, hook, tally, n)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(1 / rate)
        if tasks:
            await asyncio.gather(*tasks)


def _minute(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC).replace(second=0, microsecond=0)


class ScheduleOracle:
    """Schedule triggers (`* * * * *`) whose due slots the test enumerates from its own clock.

    `feed` adds triggers whose first slot lies 1–8 minutes in the past (so schedulers race over
    catch-up work all through a fault); `check` then demands one run for every minute from each
    trigger's first slot up to the test's present, none before the first slot, none in the future.
    """

    def __init__(self, world: World, seed: int = 11) -> None:
        self.world = world
        self.first_slot: dict[uuid.UUID, datetime] = {}
        self.rng = random.Random(seed)
        self.problems: dict[str, Any] = {}

    async def add(self, db: asyncpg.Connection, count: int) -> None:
        now = time.time()
        rows = []
        for _ in range(count):
            routine = uuid.UUID(self.rng.choice(self.world.schedule_routines))
            rows.append((routine, _minute(now) - timedelta(minutes=self.rng.randint(1, 8))))
        ids = await db.fetch(
            "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
            " SELECT r, $3::uuid, 'schedule', '* * * * *', 'UTC', t"
            " FROM unnest($1::uuid[], $2::timestamptz[]) AS u(r, t) RETURNING id, next_run_at",
            [r for r, _ in rows],
            [t for _, t in rows],
            self.world.company_id,
        )
        for row in ids:
            self.first_slot[row["id"]] = row["next_run_at"]

    async def feed(self, database_url: str, stop: asyncio.Event, every: float = 3.0) -> None:
        """Add a few triggers every few seconds until `stop` (on a connection of its own)."""
        db = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                await self.add(db, 5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            await db.close()

    async def check(self, db: asyncpg.Connection, timeout: float = 45.0) -> dict[str, int]:
        """Wait for every slot due by now (the test's clock) to have its run; then compare exactly."""
        until = _minute(time.time())
        expected = {
            (t, first + timedelta(minutes=k))
            for t, first in self.first_slot.items()
            for k in range(int((until - first).total_seconds() // 60) + 1)
        }
        triggers = list(self.first_slot)
        deadline = time.monotonic() + timeout
        while True:
            rows = await db.fetch(
                "SELECT trigger_id, scheduled_for FROM routine_runs"
                " WHERE trigger_id = ANY($1) AND scheduled_for IS NOT NULL",
                triggers,
            )
            got = {(r["trigger_id"], r["scheduled_for"]) for r in rows}
            lost = expected - got
            if not lost or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        present = time.time()
        early = sorted(s for t, s in got if s < self.first_slot[t] or s.timestamp() > present)
        off_grid = sorted(s for _, s in got if s.second or s.microsecond)
        audits = await db.fetchval(
            "SELECT count(*) FROM routine_runs WHERE trigger_id = ANY($1) AND payload ? 'missedSlots'",
            triggers,
        )
        problems: dict[str, Any] = {
            # every slot due by the test's clock has its run
            "schedule slots never fired": len(lost),
            # none fired before it was due, or before its trigger's first slot
            "schedule slots fired early": early[:5],
            "schedule slots off the minute": off_grid[:5],
            # within the misfire grace every slot is on time: nothing may be dropped
            "missed-slot audits": audits,
        }
        self.problems = {k: v for k, v in problems.items() if v}
        return {"triggers": len(triggers), "slots": len(expected)}


class Wakeups:
    """Every `agents.*.wakeup` message, as an agent subscribed to all of them would see it."""

    def __init__(self, nats_url: str) -> None:
        self.bus = Bus(nats_url, "resilience-wakeups")
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def start(self) -> None:
        await self.bus.connect_forever()

        async def collect(msg: Msg) -> None:
            self.messages.append((msg.subject, json.loads(msg.data)))

        await self.bus.subscribe(Subjects.AGENT_WAKEUP_ALL, collect)

    async def close(self) -> None:
        await self.bus.close()


async def wait_all_decided(db: asyncpg.Connection, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'received'"):
        assert time.monotonic() < deadline, "runs left undecided"
        await asyncio.sleep(0.5)


async def verify(
    db: asyncpg.Connection,
    tally: Tally,
    world: World,
    wakeups: Wakeups,
    schedules: ScheduleOracle,
    wakeups_may_be_lost: list[tuple[float, float]],
) -> dict[str, int]:
    """The promises, checked from Postgres against what clients, agents and the clock saw.

    `wakeups_may_be_lost`: wall-clock windows around faults in which a decision may have been
    committed without its wake-up reaching NATS (a dispatcher killed between commit and publish,
    NATS down). Outside them every decision that gives an agent work has exactly one wake-up.
    """
    await wait_all_decided(db)
    slots = await schedules.check(db)
    await wait_all_decided(db)
    keys = list(tally.accepted)
    rows = await db.fetch(
        "SELECT idempotency_key, id::text AS id, payload FROM routine_runs WHERE idempotency_key = ANY($1)",
        keys,
    )
    found = {r["idempotency_key"]: r for r in rows}
    lost = [k for k in keys if k not in found]
    wrong_run = [k for k in keys if k in found and found[k]["id"] != tally.accepted[k]]
    wrong_payload = [k for k in keys if k in found and found[k]["payload"] != tally.payloads[k]]
    undecided = await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE status = 'received' OR decided_at IS NULL"
    )
    # Issues have no unique index on their origin run: a run decided twice would make two.
    double_issues = await db.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM issues WHERE origin_run_id IS NOT NULL"
        " GROUP BY origin_run_id HAVING count(*) > 1) x"
    )
    bad_created = await db.fetch(
        "SELECT r.id FROM routine_runs r LEFT JOIN issues i ON i.id = r.linked_issue_id"
        " WHERE r.status IN ('issue_created', 'completed')"
        " AND (i.id IS NULL OR i.origin_run_id <> r.id OR i.origin_id <> r.routine_id"
        "      OR i.payload <> r.payload)"
    )
    # A coalesced or skipped run points at an issue of its own routine and at that issue's run.
    bad_links = await db.fetch(
        "SELECT r.id FROM routine_runs r LEFT JOIN issues i ON i.id = r.linked_issue_id"
        " WHERE r.status IN ('coalesced', 'skipped') AND NOT r.payload ? 'missedSlots'"
        " AND (i.id IS NULL OR i.origin_id <> r.routine_id"
        "      OR r.coalesced_into_run_id IS DISTINCT FROM i.origin_run_id)"
    )
    # Each policy decides only its own way.
    off_policy = await db.fetch(
        "SELECT r.id, r.status, ro.concurrency_policy FROM routine_runs r JOIN routines ro ON ro.id = r.routine_id"
        " WHERE NOT r.payload ? 'missedSlots' AND ("
        "  (r.status = 'coalesced' AND ro.concurrency_policy <> 'coalesce_if_active')"
        "  OR (r.status = 'skipped' AND ro.concurrency_policy <> 'skip_if_active')"
        "  OR r.status = 'failed')"
    )
    # The count of coalesced fires on each issue agrees with the runs decided `coalesced` into it.
    bad_counts = await db.fetch(
        "SELECT i.id, i.coalesced_fire_count, jsonb_array_length(i.coalesced_fires) AS listed,"
        "       (SELECT count(*) FROM routine_runs r WHERE r.linked_issue_id = i.id"
        "        AND r.status = 'coalesced') AS runs"
        " FROM issues i WHERE i.origin_kind = 'routine_execution'"
    )
    bad_counts = [
        r for r in bad_counts if r["coalesced_fire_count"] != r["runs"] or r["listed"] != min(r["runs"], 100)
    ]
    # Nobody closes issues during the test, so a coalesce/skip routine must have exactly one.
    two_open = await db.fetchval(
        "SELECT count(*) FROM (SELECT i.origin_id FROM issues i JOIN routines r ON r.id = i.origin_id"
        " WHERE r.concurrency_policy IN ('coalesce_if_active', 'skip_if_active')"
        " AND i.status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')"
        " GROUP BY i.origin_id HAVING count(*) > 1) x"
    )
    wake = await _check_wakeups(db, world, wakeups, wakeups_may_be_lost)
    summary = {
        "sent": tally.sent,
        "accepted": len(keys),
        "runs": int(await db.fetchval("SELECT count(*) FROM routine_runs")),
        "issues": int(await db.fetchval("SELECT count(*) FROM issues")),
        "coalesced": int(await db.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'coalesced'")),
        "wakeups": len(wakeups.messages),
        "wakeups_excused": wake["excused"],
        "schedule_slots": slots["slots"],
        "retries": tally.retries,
        "excused_connection_errors": sum(tally.excused.values()),
    }
    print(
        "\n[resilience] "
        + ", ".join(f"{k}={v}" for k, v in summary.items())
        + f", statuses={dict(tally.statuses)}, answered_by={dict(tally.answered_by)}"
    )
    problems = {
        "failed requests": tally.failures[:10],
        "fires sent but never accepted": summary["sent"] - summary["accepted"],
        "accepted runs lost": lost[:10],
        "accepted run id differs from the recorded one": wrong_run[:10],
        "payload recorded differs from the one sent": wrong_payload[:10],
        "runs undecided": undecided,
        "runs with two issues": double_issues,
        "issue_created runs without their own issue": [str(r["id"]) for r in bad_created[:10]],
        "coalesced/skipped runs linked wrongly": [str(r["id"]) for r in bad_links[:10]],
        "decisions against the routine's policy": [dict(r) for r in off_policy[:10]],
        "coalesced counts differing from the coalesced runs": [dict(r) for r in bad_counts[:10]],
        "coalesce/skip routines with two open issues": two_open,
        "wake-ups differing from the decisions": wake["errors"][:10],
        **schedules.problems,
    }
    problems = {k: v for k, v in problems.items() if v}
    assert problems == {}, f"{len(problems)} promise(s) broken: {problems}"
    return summary


async def _check_wakeups(
    db: asyncpg.Connection, world: World, wakeups: Wakeups, windows: list[tuple[float, float]]
) -> dict[str, Any]:
    """Compare the wake-ups with the decisions, polling while some are still on their way."""
    deadline = time.monotonic() + 15
    while True:
        result = await _compare_wakeups(db, world, wakeups, windows)
        if not result["unwoken"] or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def _compare_wakeups(
    db: asyncpg.Connection, world: World, wakeups: Wakeups, windows: list[tuple[float, float]]
) -> dict[str, Any]:
    runs = {
        str(r["id"]): r
        for r in await db.fetch(
            "SELECT id, routine_id, status, linked_issue_id, extract(epoch FROM decided_at) AS decided"
            " FROM routine_runs"
        )
    }
    errors: list[str] = []
    seen: Counter[str] = Counter()
    # One wake-up per group of issues a routine created one after the other (issueIds naming the
    # issue of each run), one per issue fires were coalesced into by one transaction; up to 100 runs
    # in runIds, the last also in runId: each run named by exactly one. Only alerts
    # (`routine_failing`) name no run.
    named: list[tuple[str, dict[str, Any], str, Any]] = []  # (subject, wake-up, run, its issue)
    for subject, msg in wakeups.messages:
        if msg.get("reason") == "routine_failing":
            continue
        ids = msg.get("runIds")
        created = msg.get("reason") == "issue_created"
        issues = msg.get("issueIds") if created else [msg.get("issueId")] * len(ids or ())
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= DECISIONS_PER_MESSAGE
            or msg.get("runId") != ids[-1]
            or not isinstance(issues, list)
            or len(issues) != len(ids)
            or msg.get("issueId") != issues[-1]
            or (not created and "issueIds" in msg)
        ):
            errors.append(
                f"malformed wake-up (runIds must hold 1-{DECISIONS_PER_MESSAGE} runs, the last runId;"
                f" issueIds on issue_created only, one per run, the last issueId): {msg}"
            )
            continue
        named += [(subject, msg, run, issue) for run, issue in zip(ids, issues, strict=True)]
    for subject, msg, run_id, issue_id in named:
        run = runs.get(run_id)
        seen[run_id] += 1
        if run is None:
            errors.append(f"wake-up for an unknown run: {msg}")
            continue
        expected = {
            "issue_created": "issue_created",
            "completed": "issue_created",
            "coalesced": "run_coalesced",
        }
        if msg.get("reason") != expected.get(run["status"]):
            errors.append(f"wake-up {msg} for a run decided {run['status']}")
        if issue_id != str(run["linked_issue_id"]) or msg.get("routineId") != str(run["routine_id"]):
            errors.append(f"wake-up {msg} does not match the run's issue/routine")
        if subject != Subjects.agent_wakeup(world.agent_id):
            errors.append(f"wake-up on {subject}, not the assignee's subject")
    errors += [f"run {run_id} woken {n} times" for run_id, n in seen.items() if n > 1]
    excused, unwoken = 0, 0
    for run_id, run in runs.items():
        if run["status"] not in ("issue_created", "completed", "coalesced") or run_id in seen:
            continue
        decided = float(run["decided"])
        if any(a <= decided <= b for a, b in windows):
            excused += 1
        else:
            unwoken += 1
            errors.append(f"run {run_id} decided {run['status']} at {decided:.2f} but no agent was woken")
    return {"errors": errors, "excused": excused, "unwoken": unwoken}


async def terminate_service_connections(db: asyncpg.Connection) -> int:
    """pg_terminate_backend every connection the services hold to this database."""
    return int(
        await db.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = ANY($1)",
            ["api", *SERVICES],
        )
    )
