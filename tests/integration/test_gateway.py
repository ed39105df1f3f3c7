"""The webhook gateway against real Postgres and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from standardwebhooks import Webhook

from routines_gateway.app import CACHE_KEY, COMMITTER_KEY, create_app
from shared.bus import REQUEST_ID_HEADER, Subjects
from shared.settings import GatewaySettings
from tests.integration.api_client import Client, call, make_routine, make_tenant
from tests.support import Stack, served, start_service, wait_until


def gateway_app(stack: Stack, **overrides: Any) -> web.Application:
    values: dict[str, Any] = {"trigger_cache_ttl_sec": 0, **overrides}
    return create_app(
        GatewaySettings(
            database_url=stack.database_url, nats_url=stack.nats_url, secret_key=stack.secret_key, **values
        )
    )


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Client]:
    # Failed attempts are not rate-limited here (this client fails on purpose, many times).
    app = gateway_app(stack, webhook_max_body_bytes=2048, rate_limit_failed_burst=1_000_000)
    async with TestClient(served(app)) as client:
        yield client


class Hook:
    def __init__(self, api: Client, tenant: Any, routine: dict[str, Any], trigger: dict[str, Any]) -> None:
        self.api, self.tenant, self.routine, self.trigger = api, tenant, routine, trigger
        self.secret: str = trigger["secret"]
        self.path = f"/api/routine-triggers/public/{trigger['publicId']}/fire"

    def headers(
        self, body: bytes, ts: int | None = None, secret: str | None = None, msg_id: str = "msg-1"
    ) -> dict[str, str]:
        secret = secret or self.secret
        ts = int(time.time()) if ts is None else ts
        mode = self.trigger["signingMode"]
        headers = {"Content-Type": "application/json"}
        if mode == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        elif mode == "hmac_sha256":
            headers["X-Paperclip-Timestamp"] = str(ts)
            headers["X-Paperclip-Signature"] = hmac.new(
                secret.encode(), f"{ts}.".encode() + body, hashlib.sha256
            ).hexdigest()
        elif mode == "github_hmac":
            headers["X-Hub-Signature-256"] = (
                "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            )
            headers["X-GitHub-Delivery"] = msg_id
        else:
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = Webhook(secret).sign(
                msg_id, datetime.fromtimestamp(ts, UTC), body.decode()
            )
        return headers


async def make_hook(api: Client, admin: str, mode: str, **routine_fields: Any) -> Hook:
    tenant = await make_tenant(api, admin, "A")
    routine = await make_routine(api, tenant, **routine_fields)
    trigger = await call(
        api,
        "POST",
        f"/api/routines/{routine['id']}/triggers",
        tenant.board,
        {"kind": "webhook", "signingMode": mode},
        201,
    )
    return Hook(api, tenant, routine, trigger)


async def run_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM routine_runs"))


@pytest.fixture
def signing_mode() -> str:
    """How `hook` is signed; a test names another with @pytest.mark.parametrize("signing_mode", ...)."""
    return "bearer"


@pytest.fixture
async def hook(api: Client, admin_token: str, signing_mode: str) -> Hook:
    """A webhook trigger signed the `signing_mode` way, on a new routine of a new tenant."""
    return await make_hook(api, admin_token, signing_mode)


# A future timestamp is checked against the clock when the request arrives; keep it clear of
# the 300 s window: with +301 a loaded machine took over a second to reach that case, and it passed.
FUTURE = 330

MODES = ["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]


async def test_fires_get_run_ids_in_the_order_they_were_accepted(
    gateway: Client, hook: Hook, db: asyncpg.Connection
) -> None:
    """Run ids are UUIDv7 (RFC 9562): the milliseconds of their creation first, so the primary key
    of a table written thousands of times a second grows at one end instead of at random pages
    (bench/id_order.py: fewer pages written, less WAL)."""
    ids = []
    for n in range(3):
        body = b'{"n": %d}' % n
        resp = await gateway.post(hook.path, data=body, headers=hook.headers(body, msg_id=f"m{n}"))
        assert resp.status == 202, await resp.text()
        ids.append(uuid.UUID((await resp.json())["runId"]))
        await asyncio.sleep(0.002)  # the next fire, a millisecond or more later
    assert [i.version for i in ids] == [7, 7, 7]
    assert ids == sorted(ids)
    recorded = await db.fetchval(
        "SELECT extract(epoch FROM triggered_at) FROM routine_runs WHERE id = $1", ids[0]
    )
    assert abs(int.from_bytes(ids[0].bytes[:6], "big") / 1000 - float(recorded)) < 5


@pytest.mark.parametrize("signing_mode", MODES)
async def test_valid_fire_is_accepted_and_recorded(
    gateway: Client, hook: Hook, db: asyncpg.Connection, signing_mode: str
) -> None:
    body = b'{"event": "push"}'
    resp = await gateway.post(hook.path, data=body, headers=hook.headers(body))
    assert resp.status == 202, await resp.text()
    data = await resp.json()
    assert data["status"] == "received"
    run = await db.fetchrow("SELECT * FROM routine_runs WHERE id = $1", uuid.UUID(data["runId"]))
    assert (run["source"], run["payload"]) == ("webhook", {"event": "push"})
    empty = await gateway.post(
        hook.path, data=b"", headers={**hook.headers(b"", msg_id="m2"), "Content-Type": "text/plain"}
    )
    if signing_mode != "hmac_sha256":  # same empty body, same second: an exact replay for hmac_sha256
        assert empty.status == 202
        assert (
            await db.fetchval(
                "SELECT payload FROM routine_runs WHERE id = $1", uuid.UUID((await empty.json())["runId"])
            )
        ) == {}


@pytest.mark.parametrize("signing_mode", MODES)
async def test_authentication_failures_are_401(
    gateway: Client, hook: Hook, db: asyncpg.Connection, signing_mode: str
) -> None:
    body = b'{"a": 1}'
    good = hook.headers(body)
    cases: list[tuple[dict[str, str], bytes]] = [
        ({"Content-Type": "application/json"}, body),  # missing headers
        (hook.headers(body, secret="whsec_" + "A" * 44), body),  # wrong secret
        (
            {
                k: (
                    v[:-3] + "zzz"
                    if k.lower()
                    in ("authorization", "x-paperclip-signature", "x-hub-signature-256", "webhook-signature")
                    else v
                )
                for k, v in good.items()
            },
            body,
        ),
    ]
    if signing_mode != "bearer":  # bearer signs nothing: a body change cannot be detected
        cases.append((good, b'{"a": 2}'))
    if signing_mode in ("hmac_sha256", "standard_webhooks"):
        now = int(time.time())
        cases += [(hook.headers(body, ts=now - 301), body), (hook.headers(body, ts=now + FUTURE), body)]
        if signing_mode == "hmac_sha256":
            cases += [
                (hook.headers(body, ts=(now - 301) * 1000), body),
                (hook.headers(body, ts=(now + FUTURE) * 1000), body),
                ({**good, "X-Paperclip-Timestamp": "yesterday"}, body),
            ]
    for headers, payload in cases:
        resp = await gateway.post(hook.path, data=payload, headers=headers)
        assert resp.status == 401, (headers, await resp.text())
        assert (await resp.json())["error"] == "webhook authentication failed"
    assert await run_count(db) == 0


@pytest.mark.parametrize("signing_mode", ["hmac_sha256"])
async def test_replay_is_409_and_idempotency_key_returns_the_original(
    gateway: Client, hook: Hook, db: asyncpg.Connection
) -> None:
    body = b'{"n": 1}'
    headers = hook.headers(body)
    first = await gateway.post(hook.path, data=body, headers=headers)
    assert first.status == 202
    replay = await gateway.post(hook.path, data=body, headers=headers)
    assert replay.status == 409
    assert await run_count(db) == 1
    keyed = {**hook.headers(b'{"n": 2}', ts=int(time.time()) - 1), "Idempotency-Key": "order-7"}
    one = await gateway.post(hook.path, data=b'{"n": 2}', headers=keyed)
    assert one.status == 202
    retry = {**hook.headers(b'{"n": 2}', ts=int(time.time())), "Idempotency-Key": "order-7"}
    two = await gateway.post(hook.path, data=b'{"n": 2}', headers=retry)
    assert two.status == 200
    assert (await two.json())["runId"] == (await one.json())["runId"]
    assert await run_count(db) == 2


@pytest.mark.parametrize("signing_mode", ["standard_webhooks"])
async def test_standard_webhooks_resigned_retry_returns_original(
    gateway: Client, hook: Hook, db: asyncpg.Connection
) -> None:
    body = b'{"x": 1}'
    original = hook.headers(body, msg_id="evt-1", ts=int(time.time()) - 5)
    first = await gateway.post(hook.path, data=body, headers=original)
    again = await gateway.post(hook.path, data=body, headers=hook.headers(body, msg_id="evt-1"))
    replay = await gateway.post(hook.path, data=body, headers=original)
    assert (first.status, again.status, replay.status) == (202, 200, 409)
    assert (await again.json())["runId"] == (await first.json())["runId"]
    assert await run_count(db) == 1


async def test_rotation_without_and_with_grace(
    api: Client, gateway: Client, hook: Hook, db: asyncpg.Connection
) -> None:
    old = hook.secret
    rotated = await call(
        api, "POST", f"/api/routine-triggers/{hook.trigger['id']}/rotate-secret", hook.tenant.board, {}, 200
    )
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret=old))).status == 401
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret=rotated["secret"]))).status == 202
    graced = await call(
        api,
        "POST",
        f"/api/routine-triggers/{hook.trigger['id']}/rotate-secret",
        hook.tenant.board,
        {"graceSec": 2},
        200,
    )
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret=rotated["secret"]))).status == 202
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret=graced["secret"]))).status == 202
    until = datetime.fromisoformat(graced["previousSecretValidUntil"].replace("Z", "+00:00"))

    async def old_secret_refused() -> bool:
        # Poll the condition instead of sleeping past the grace period; the database clock decides.
        before = await db.fetchval("SELECT clock_timestamp()")
        status = (await gateway.post(hook.path, headers=hook.headers(b"", secret=rotated["secret"]))).status
        if status == 202:
            assert before < until, "previous secret accepted after its grace period"
        return status == 401

    await wait_until(old_secret_refused, timeout=30)
    assert (
        await db.fetchval("SELECT clock_timestamp()") >= until
    )  # refused only once the grace period was over
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret=graced["secret"]))).status == 202


async def test_status_codes(api: Client, gateway: Client, hook: Hook, db: asyncpg.Connection) -> None:
    assert (await gateway.post("/api/routine-triggers/public/" + "0" * 24 + "/fire")).status == 404
    assert (await gateway.post("/api/routine-triggers/public/nothex/fire")).status == 404
    ok = hook.headers(b"")
    assert (await gateway.post(hook.path, data=b"[1]", headers=ok)).status == 400
    assert (await gateway.post(hook.path, data=b"{nope", headers=ok)).status == 400
    assert (await gateway.post(hook.path, data=rb'{"a": "\u0000"}', headers=ok)).status == 400
    assert (
        await gateway.post(
            hook.path, data=b"a=b", headers={**ok, "Content-Type": "application/x-www-form-urlencoded"}
        )
    ).status == 415
    assert (await gateway.post(hook.path, data=b"{" + b" " * 3000 + b"}", headers=ok)).status == 413
    # 401 comes before 409; then disabled trigger, paused and archived routine → 409.
    await call(
        api,
        "PATCH",
        f"/api/routine-triggers/{hook.trigger['id']}",
        hook.tenant.board,
        {"enabled": False},
        200,
    )
    assert (await gateway.post(hook.path, headers=hook.headers(b"", secret="wrong"))).status == 401
    assert (await gateway.post(hook.path, headers=ok)).status == 409
    await call(
        api, "PATCH", f"/api/routine-triggers/{hook.trigger['id']}", hook.tenant.board, {"enabled": True}, 200
    )
    for status in ("paused", "archived"):
        await call(
            api, "PATCH", f"/api/routines/{hook.routine['id']}", hook.tenant.board, {"status": status}, 200
        )
        resp = await gateway.post(hook.path, headers=ok)
        assert resp.status == 409
        assert status in (await resp.json())["error"]
    assert await run_count(db) == 0


@pytest.mark.parametrize("signing_mode", ["hmac_sha256"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Authorization",
                "X-Paperclip-Signature",
                "X-Paperclip-Timestamp",
                "Content-Type",
                "Idempotency-Key",
                "webhook-id",
                "webhook-signature",
                "webhook-timestamp",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    ),
    body=st.binary(max_size=300),
)
async def test_fuzz_never_5xx_never_a_run(
    gateway: Client,
    hook: Hook,
    db: asyncpg.Connection,
    headers: dict[str, str],
    body: bytes,
) -> None:
    """Every example fires at the same hook (the fixture is made once for all of them)."""
    resp = await gateway.post(hook.path, data=body, headers=headers)
    assert resp.status < 500
    assert resp.status in (400, 401, 413, 415)
    json.loads(await resp.text())
    assert await run_count(db) == 0


async def test_cached_trigger_state_follows_changes_by_invalidation_not_expiry(
    api: Client, hook: Hook, stack: Stack
) -> None:
    """A long cache TTL, yet rotation and pausing take effect at once: routines.triggers.changed."""
    async with TestClient(served(gateway_app(stack, trigger_cache_ttl_sec=300))) as gateway:
        from routines_gateway.app import CACHE_KEY

        assert gateway.app is not None
        await gateway.app[CACHE_KEY].wait_following()
        assert (await gateway.post(hook.path, headers=hook.headers(b""))).status == 202  # now cached
        misses_before = cache_misses()
        await call(
            api,
            "POST",
            f"/api/routine-triggers/{hook.trigger['id']}/rotate-secret",
            hook.tenant.board,
            {},
            200,
        )

        async def status_with(secret: str) -> int:
            return (await gateway.post(hook.path, headers=hook.headers(b"", secret=secret))).status

        # The TTL is 300 s: only the invalidation message can make this happen (poll, not a timer).
        await wait_until(lambda: _is(status_with(hook.secret), 401), timeout=30, interval=0.02)
        rotated = await call(
            api,
            "POST",
            f"/api/routine-triggers/{hook.trigger['id']}/rotate-secret",
            hook.tenant.board,
            {},
            200,
        )
        await call(
            api, "PATCH", f"/api/routines/{hook.routine['id']}", hook.tenant.board, {"status": "paused"}, 200
        )
        await wait_until(lambda: _is(status_with(rotated["secret"]), 409), timeout=30, interval=0.02)
        assert cache_misses() > misses_before  # the entry was dropped and re-read, not expired


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


def cache_misses() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("routines_gateway_trigger_cache_total", {"result": "miss"}) or 0.0


@pytest.mark.e2e
@pytest.mark.parametrize("signing_mode", ["github_hmac"])
async def test_two_gateway_processes_same_delivery_one_run(
    hook: Hook, stack: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    gateways = [start_service("webhook-gateway", stack.env(), tmp_path) for _ in range(2)]
    try:
        body = b'{"action": "opened"}'
        headers = hook.headers(body, msg_id="delivery-42")
        async with aiohttp.ClientSession() as http:

            async def send(url: str) -> int:
                async with http.post(url + hook.path, data=body, headers=headers) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(send(g.url) for g in gateways for _ in range(5)))
        # One run; every other copy is the same delivery id, so a redelivery: 200 with that run.
        assert sorted(statuses).count(202) == 1
        assert set(statuses) <= {202, 200}
        assert await run_count(db) == 1
    finally:
        for g in gateways:
            g.kill()


@pytest.mark.e2e
async def test_postgres_down_is_503_then_recovers(
    hook: Hook, stack: Stack, tmp_path: Path, postgres_server: Any
) -> None:
    gateway = start_service(
        "webhook-gateway", stack.env(db_acquire_timeout_sec=1, trigger_cache_ttl_sec=0), tmp_path
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def fire() -> tuple[int, float]:
                started = time.monotonic()
                async with http.post(gateway.url + hook.path, headers=hook.headers(b"")) as resp:
                    await resp.read()
                    return resp.status, time.monotonic() - started

            assert (await fire())[0] == 202
            postgres_server.stop()
            try:
                status, elapsed = await fire()
                assert status == 503
                assert elapsed < 10  # bounded by the acquire/connect timeouts, no hang
            finally:
                postgres_server.start()
            for _ in range(100):
                if (await fire())[0] == 202:
                    break
                await asyncio.sleep(0.1)
            assert (await fire())[0] == 202
    finally:
        gateway.kill()


@pytest.mark.parametrize("signing_mode", ["hmac_sha256"])
async def test_each_request_is_counted_once_by_outcome(gateway: Client, hook: Hook) -> None:
    from prometheus_client import REGISTRY

    def counts() -> dict[str, float]:
        return {
            o: REGISTRY.get_sample_value("routines_gateway_requests_total", {"outcome": o}) or 0.0
            for o in ("accepted", "stale", "bad_signature", "replayed", "not_active", "not_found", "error")
        }

    before = counts()
    body = b"{}"
    headers = hook.headers(body)
    assert (await gateway.post(hook.path, data=body, headers=headers)).status == 202
    assert (await gateway.post(hook.path, data=body, headers=headers)).status == 409
    assert (
        await gateway.post(hook.path, data=body, headers=hook.headers(body, ts=int(time.time()) - 400))
    ).status == 401
    assert (await gateway.post("/api/routine-triggers/public/" + "f" * 24 + "/fire")).status == 404
    after = counts()
    assert {k: after[k] - before[k] for k in after} == {
        "accepted": 1,
        "stale": 1,
        "bad_signature": 0,
        "replayed": 1,
        "not_active": 0,
        "not_found": 1,
        "error": 0,
    }


def commit_phases() -> dict[str, tuple[float, float]]:
    """The gateway's group-commit phases so far: phase → (seconds, commits)."""
    return {
        phase: (
            REGISTRY.get_sample_value("routines_gateway_commit_seconds_sum", {"phase": phase}) or 0.0,
            REGISTRY.get_sample_value("routines_gateway_commit_seconds_count", {"phase": phase}) or 0.0,
        )
        for phase in ("wait", "insert", "announce")
    }


@pytest.mark.parametrize("signing_mode", ["hmac_sha256"])
async def test_a_commit_is_timed_by_phase_and_a_wait_in_postgres_is_the_inserts(
    gateway: Client, hook: Hook, db: asyncpg.Connection, stack: Stack
) -> None:
    """routines_gateway_commit_seconds splits a fire's commit into its queueing, its INSERT (with
    the commit) and its announcement: a fire whose INSERT waits in Postgres (here on a lock of its
    routine) shows it in the insert phase, not in the other two; a duplicate inserts nothing and
    announces nothing."""
    before = commit_phases()
    locker = await asyncpg.connect(stack.database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM routines WHERE id = $1 FOR UPDATE", uuid.UUID(hook.routine["id"]))
        body = b'{"n": 1}'
        headers = hook.headers(body)
        fire = asyncio.ensure_future(gateway.post(hook.path, data=body, headers=headers))
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE '%gateway%' AND wait_event_type = 'Lock'"
            )
        )
        await asyncio.sleep(0.3)
        await tx.rollback()
        assert (await fire).status == 202
    finally:
        await locker.close()
    middle = commit_phases()
    delta = {
        phase: (middle[phase][0] - before[phase][0], middle[phase][1] - before[phase][1]) for phase in middle
    }
    assert {phase: count for phase, (_, count) in delta.items()} == {"wait": 1, "insert": 1, "announce": 1}
    assert delta["insert"][0] >= 0.3
    assert delta["wait"][0] < 0.3 and delta["announce"][0] < 0.3
    # The same delivery again: its INSERT matches the first (409), so nothing is announced.
    assert (await gateway.post(hook.path, data=body, headers=headers)).status == 409
    after = commit_phases()
    assert after["insert"][1] - middle["insert"][1] == 1
    assert after["announce"][1] == middle["announce"][1]


# --- The trigger cache under concurrency --------------------------------------------------------

CACHE_RESULTS = ("hit", "negative_hit", "miss", "joined")


def cache_lookups() -> float:
    return sum(
        REGISTRY.get_sample_value("routines_gateway_trigger_cache_total", {"result": result}) or 0.0
        for result in CACHE_RESULTS
    )


async def loads_waiting(db: asyncpg.Connection, at_least: int) -> bool:
    """Whether that many gateway queries for a trigger by public id wait on a lock (the test's)."""
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE '%gateway%' AND wait_event_type = 'Lock'"
        " AND query LIKE '%public_id%'"
    )
    return int(waiting) >= at_least


@contextlib.asynccontextmanager
async def triggers_locked(database_url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A transaction holding routine_triggers exclusively, so every trigger load waits, until the
    yielded `release()` (or the end of the block)."""
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE routine_triggers IN ACCESS EXCLUSIVE MODE")

    async def release() -> None:
        if not conn.is_closed():
            await tx.rollback()
            await conn.close()

    try:
        yield release
    finally:
        await release()


@pytest.fixture
async def cached_gateway(stack: Stack) -> AsyncIterator[tuple[Client, web.Application]]:
    app = gateway_app(stack, trigger_cache_ttl_sec=60)
    async with TestClient(served(app)) as client:
        yield client, app


async def test_concurrent_fires_to_a_cold_trigger_load_it_from_the_database_once(
    db: asyncpg.Connection,
    database_url: str,
    cached_gateway: tuple[Client, web.Application],
    hook: Hook,
) -> None:
    """A cold (or just invalidated) hot trigger must not send every waiting request to the
    database: one load, the others wait for it, instead of a stampede that drains the pool."""
    gateway, _app = cached_gateway
    async with triggers_locked(database_url) as release:
        before = cache_lookups()
        fires = [
            asyncio.ensure_future(gateway.post(hook.path, data=b"{}", headers=hook.headers(b"{}")))
            for _ in range(20)
        ]

        async def all_looked_up_and_a_load_waits() -> bool:
            return cache_lookups() - before >= 20 and await loads_waiting(db, 1)

        await wait_until(all_looked_up_and_a_load_waits)
        with contextlib.suppress(AssertionError):  # a second load would show within this second
            await wait_until(lambda: loads_waiting(db, 2), timeout=1.0)
        assert not await loads_waiting(db, 2)
        await release()
    answers = await asyncio.gather(*fires)
    assert [resp.status for resp in answers] == [202] * 20
    assert await run_count(db) == 20


async def test_a_load_begun_before_an_invalidation_is_not_joined_after_it(
    db: asyncpg.Connection,
    database_url: str,
    cached_gateway: tuple[Client, web.Application],
    hook: Hook,
) -> None:
    """A request arriving after `routines.triggers.changed` must not take the answer of a load
    that began before the change (it could carry the old secret, or a trigger since disabled):
    it loads afresh."""
    gateway, app = cached_gateway
    async with triggers_locked(database_url):
        first = asyncio.ensure_future(gateway.post(hook.path, data=b"{}", headers=hook.headers(b"{}")))
        await wait_until(lambda: loads_waiting(db, 1))
        app[CACHE_KEY].clear()  # what a routines.triggers.changed message does
        second = asyncio.ensure_future(gateway.post(hook.path, data=b"{}", headers=hook.headers(b"{}")))
        await wait_until(lambda: loads_waiting(db, 2), timeout=5.0)
    assert [(await first).status, (await second).status] == [202, 202]


async def test_fires_committed_together_are_announced_in_one_message(
    stack: Stack, hook: Hook, database_url: str, db: asyncpg.Connection
) -> None:
    """The runs one group commit inserted go to the dispatchers as one `routines.runs.requested`
    message (`runIds`, up to a hundred), so a busy trigger costs the dispatchers one fetch, parse
    and ack per commit instead of one per fire; each message's trace header is the request id of
    the first fire it names, and a lone fire keeps the one-run message."""
    app = gateway_app(stack, group_commit_writers=1)
    nc = await nats.connect(stack.nats_url)
    announced: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        announced.append(msg)

    await nc.subscribe(Subjects.RUNS_REQUESTED, cb=on_message)
    holder = await asyncpg.connect(database_url)
    try:
        async with TestClient(served(app)) as gateway:
            # The routine's row held: the first commit waits on it, the other fires queue behind it.
            tx = holder.transaction()
            await tx.start()
            await holder.execute(
                "SELECT 1 FROM routines WHERE id = $1 FOR UPDATE", uuid.UUID(hook.routine["id"])
            )

            def fire(n: int) -> asyncio.Future[aiohttp.ClientResponse]:
                headers = {**hook.headers(b"{}"), REQUEST_ID_HEADER: f"fire-{n}"}
                return asyncio.ensure_future(gateway.post(hook.path, data=b"{}", headers=headers))

            fires = [fire(0)]
            await wait_until(lambda: inserts_waiting_on_a_lock(db))
            fires += [fire(n) for n in range(1, 20)]
            await wait_until(lambda: app[COMMITTER_KEY].waiting == 19)
            await tx.rollback()
            answers = await asyncio.gather(*fires)
            assert [resp.status for resp in answers] == [202] * 20
            request_of = {(await resp.json())["runId"]: resp.headers[REQUEST_ID_HEADER] for resp in answers}
        await wait_until(lambda: sum(len(_named(msg)) for msg in announced) >= 20)
        await nc.flush()
    finally:
        await holder.close()
        await nc.close()
    named = [_named(msg) for msg in announced]
    assert sorted(len(runs) for runs in named) == [1, 19]
    assert sorted(run for runs in named for run in runs) == sorted(request_of)
    for msg, runs in zip(announced, named, strict=True):
        assert msg.headers is not None
        assert msg.headers[REQUEST_ID_HEADER] == request_of[runs[0]]
        assert msg.headers["Nats-Msg-Id"] == (runs[0] if len(runs) == 1 else f"{runs[0]}+{len(runs)}")


async def inserts_waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO routine_runs%')"
        )
    )


def _named(msg: Msg) -> list[str]:
    data = json.loads(msg.data)
    return list(data["runIds"]) if "runIds" in data else [data["runId"]]
