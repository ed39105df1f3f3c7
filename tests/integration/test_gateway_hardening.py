"""Gateway hardening (issue 11): each test is named after the defect it guards against."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.http import SETTINGS_KEY
from tests.integration.api_client import Client, api_app
from tests.integration.test_gateway import MODES, Hook, gateway_app, make_hook, run_count
from tests.netproxy import segmenting_proxy
from tests.support import Stack, start_service

LIMIT = 256 * 1024


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Client]:
    async with TestClient(TestServer(api_app(stack, manual_run_wait_sec=0))) as client:
        yield client


@pytest.fixture
async def gateway_server(stack: Stack) -> AsyncIterator[TestServer]:
    """A gateway on a real port with the default body limit (256 KiB)."""
    server = TestServer(gateway_app(stack, webhook_max_body_bytes=LIMIT))
    await server.start_server()
    assert server.port is not None
    yield server
    await server.close()


def port(server: TestServer) -> int:
    assert server.port is not None
    return server.port


def body_of(size: int, n: int = 0) -> bytes:
    filler = max(0, size - len(b'{"event": "push", "n": 0, "data": ""}'))
    return json.dumps({"event": "push", "n": n, "data": "x" * filler}).encode()


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], chunked: bool
) -> tuple[int, Any]:
    data: Any = _chunks(body) if chunked else body
    async with http.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("mode", MODES)
async def test_segmented_body_is_read_whole_not_what_happens_to_be_buffered(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection, mode: str
) -> None:
    """Bodies that arrive in small, delayed TCP segments (Content-Length and chunked, small and
    ~200 KB) verify and are stored whole, in every signing mode."""
    hook = await make_hook(api, admin_token, mode)
    async with (
        segmenting_proxy(
            gateway_server.host, port(gateway_server), segment=1460, delay=0.001, pause_in_body=10, pause=0.3
        ) as proxy,
        aiohttp.ClientSession() as http,
    ):
        n = 0
        for size in (40, 200 * 1024):
            for chunked in (False, True):
                n += 1
                body = body_of(size, n)
                headers = hook.headers(body, msg_id=f"m-{n}")
                status, answer = await post(http, proxy.url + hook.path, body, headers, chunked)
                assert status == 202, (size, chunked, answer)
                stored = await db.fetchval(
                    "SELECT payload FROM routine_runs WHERE id = $1::uuid", answer["runId"]
                )
                assert stored == json.loads(body)
        assert proxy.connections >= 1
    assert await run_count(db) == 4


async def test_chunked_body_over_the_limit_is_413_not_400(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    body = body_of(LIMIT + 50_000)
    async with (
        segmenting_proxy(gateway_server.host, port(gateway_server), segment=8192, delay=0.001) as proxy,
        aiohttp.ClientSession() as http,
    ):
        status, answer = await post(http, proxy.url + hook.path, body, hook.headers(body), chunked=True)
        assert status == 413, answer
        assert "exceeds" in answer["error"]
    assert await run_count(db) == 0


__all__ = ["Hook"]


async def raw_request(host: str, port: int, request: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send raw bytes (headers that no HTTP client library would send); the status and body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def raw_fire(hook: Hook, headers: dict[str, bytes], body: bytes = b"{}") -> bytes:
    lines = [f"POST {hook.path} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_one_bad_fire_in_a_group_commit_fails_no_other_tenants_fire(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """Tenant A sends fires whose Idempotency-Key is not valid UTF-8 while tenant B fires: A's are
    refused (400), every one of B's is accepted, and the outcome metric counts no 5xx."""
    from prometheus_client import REGISTRY

    bad = await make_hook(api, admin_token, "bearer")
    good = await make_hook(api, admin_token, "bearer")
    errors_before = REGISTRY.get_sample_value("routines_gateway_requests_total", {"outcome": "error"}) or 0
    bad_request = raw_fire(
        bad,
        {
            "Authorization": f"Bearer {bad.secret}".encode(),
            "Content-Type": b"application/json",
            "Idempotency-Key": b"key-\xff\xfe-\xc3(",
        },
    )
    async with aiohttp.ClientSession() as http:

        async def good_fire(i: int) -> int:
            body = json.dumps({"i": i}).encode()
            async with http.post(
                gateway_server.make_url(good.path), data=body, headers=good.headers(body)
            ) as resp:
                return resp.status

        async def bad_fire() -> int:
            return (await raw_request(gateway_server.host, port(gateway_server), bad_request))[0]

        results = await asyncio.gather(*(good_fire(i) for i in range(200)), *(bad_fire() for _ in range(20)))
    assert results[:200] == [202] * 200
    assert set(results[200:]) == {400}
    errors_after = REGISTRY.get_sample_value("routines_gateway_requests_total", {"outcome": "error"}) or 0
    assert errors_after == errors_before
    assert (
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", good.routine["id"])
        == 200
    )
    assert (
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", bad.routine["id"])
        == 0
    )


async def test_group_commit_data_error_fails_only_the_bad_row(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection
) -> None:
    """A row the database refuses (here jsonb's \\u0000, which the edge would have refused) sits in
    one batch with 50 good rows of another tenant: only that row fails, the others are stored."""
    from routines_gateway.ingest import GroupCommitter, PendingRun
    from shared.db import Database
    from shared.errors import BadRequest

    bad = await make_hook(api, admin_token, "bearer")
    good = await make_hook(api, admin_token, "bearer")

    def pending(hook: Hook, payload: dict[str, Any], key: str) -> PendingRun:
        routine = uuid.UUID(hook.routine["id"])
        company = uuid.UUID(hook.tenant.company_id)
        return PendingRun(routine, company, uuid.UUID(hook.trigger["id"]), payload, key, None, None)

    settings = gateway_app(stack).get(SETTINGS_KEY)
    assert settings is not None
    database = Database(settings, application_name="test")
    await database.open()
    try:
        committer = GroupCommitter(database, max_batch=256, writers=1)
        goods = [pending(good, {"i": i}, f"k{i}") for i in range(50)]
        poison = pending(bad, {"a": "\x00"}, "poison")
        submitted = [asyncio.ensure_future(committer.submit(p)) for p in [*goods[:25], poison, *goods[25:]]]
        await asyncio.sleep(0)  # all queued before the writer takes its first batch
        stopping = asyncio.Event()
        writer = asyncio.ensure_future(committer.run(stopping))
        results = await asyncio.gather(*submitted, return_exceptions=True)
        stopping.set()
        await writer
    finally:
        await database.close()
    assert isinstance(results[25], BadRequest)
    assert results[:25] + results[26:] == [True] * 50
    assert (
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", good.routine["id"])
        == 50
    )


async def rotate(hook: Hook, grace: int = 0, status: int = 200) -> Any:
    resp = await hook.api.post(
        f"/api/routine-triggers/{hook.trigger['id']}/rotate-secret",
        json={"graceSec": grace},
        headers={"Authorization": f"Bearer {hook.tenant.board}"},
    )
    assert resp.status == status, await resp.text()
    return resp


async def test_rotations_with_grace_never_leave_more_than_two_live_secrets(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection
) -> None:
    """Each rotation with a grace period used to add a live secret (and an HMAC per request)."""
    hook = await make_hook(api, admin_token, "hmac_sha256")
    secrets = [hook.secret]
    for _ in range(4):
        secrets.append((await (await rotate(hook, grace=3600)).json())["secret"])
    live = await db.fetchval(
        "SELECT count(*) FROM webhook_secrets WHERE trigger_id = $1::uuid"
        " AND (expires_at IS NULL OR expires_at > now())",
        hook.trigger["id"],
    )
    assert live == 2
    async with TestClient(TestServer(gateway_app(stack))) as gateway:
        statuses = []
        for i, secret in enumerate(secrets):
            body = json.dumps({"i": i}).encode()
            resp = await gateway.post(hook.path, data=body, headers=hook.headers(body, secret=secret))
            statuses.append(resp.status)
    assert statuses == [401, 401, 401, 202, 202]


async def test_secret_rotation_is_rate_limited_per_trigger(api: Client, admin_token: str) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    other = await make_hook(api, admin_token, "bearer")
    for _ in range(10):
        await rotate(hook)
    limited = await rotate(hook, status=429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rotat" in (await limited.json())["error"]
    await rotate(other)  # another trigger is not affected


async def test_github_signature_replayed_under_a_new_delivery_id_makes_no_second_run(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """github_hmac has no timestamp: a captured delivery re-sent with a fresh X-GitHub-Delivery used
    to create a run every time. Same id → 200 with the original (GitHub's Redeliver); other id → 409."""
    hook = await make_hook(api, admin_token, "github_hmac")
    body = b'{"action": "opened"}'
    async with aiohttp.ClientSession() as http:
        url = str(gateway_server.make_url(hook.path))
        first = await post(http, url, body, hook.headers(body, msg_id="delivery-1"), chunked=False)
        redelivered = await post(http, url, body, hook.headers(body, msg_id="delivery-1"), chunked=False)
        replayed = [
            await post(http, url, body, hook.headers(body, msg_id=f"forged-{i}"), chunked=False)
            for i in range(3)
        ]
    assert first[0] == 202
    assert redelivered == (200, {**first[1], "duplicate": True})
    assert [status for status, _ in replayed] == [409, 409, 409]
    assert await run_count(db) == 1


async def test_unauthenticated_requests_do_not_drain_the_trigger_rate_limit(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Anyone who knows a webhook URL used to starve its sender: the trigger's bucket was charged
    before verification. Failed attempts now draw on their own bucket, per client address."""
    hook = await make_hook(api, admin_token, "hmac_sha256")
    app = gateway_app(
        stack,
        rate_limit_trigger_per_sec=0.01,
        rate_limit_trigger_burst=3,
        rate_limit_failed_per_sec=0.01,
        rate_limit_failed_burst=5,
        trusted_proxies=["127.0.0.0/8"],
    )
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    sender = {"X-Forwarded-For": "198.51.100.7"}
    async with TestClient(TestServer(app)) as gateway:
        forged = []
        for i in range(20):
            body = json.dumps({"forged": i}).encode()
            headers = {**hook.headers(body, secret="whsec_" + "A" * 44), **attacker}
            forged.append((await gateway.post(hook.path, data=body, headers=headers)).status)
        real = []
        for i in range(4):
            body = json.dumps({"real": i}).encode()
            real.append(
                (await gateway.post(hook.path, data=body, headers={**hook.headers(body), **sender})).status
            )
    assert forged == [401] * 5 + [429] * 15
    assert real == [202, 202, 202, 429]  # the trigger's own limit still holds for its sender


async def test_client_address_is_not_the_client_controlled_leftmost_forwarded_entry(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Behind a trusted proxy the leftmost X-Forwarded-For entry was the client address, so a
    client rotating it escaped the per-client limit. Now: the rightmost untrusted, valid IP;
    IPv6 clients are grouped by /64; garbage entries are not addresses."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(
        stack,
        rate_limit_client_per_sec=0.01,
        rate_limit_client_burst=2,
        trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"],
    )

    async def statuses(forwarded: list[str]) -> list[int]:
        out = []
        for value in forwarded:
            resp = await gateway.post(hook.path, headers={**hook.headers(b""), "X-Forwarded-For": value})
            out.append(resp.status)
        return out

    async with TestClient(TestServer(app)) as gateway:
        rotating = await statuses([f"192.0.2.{i}, 198.51.100.7, 10.1.2.3" for i in range(4)])
        ipv6 = await statuses([f"2001:db8:1:2::{i:x}" for i in range(1, 5)])
        # Garbage where an address belongs: the last trusted hop is the client (10.9.9.9).
        garbage = await statuses([f"evil-{i}, 10.9.9.9" for i in range(3)])
        other = await statuses(["198.51.100.8"])
    assert rotating == [202, 202, 429, 429]
    assert ipv6 == [202, 202, 429, 429]
    assert garbage == [202, 202, 429]
    assert other == [202]


@pytest.mark.parametrize(
    "timestamp", ["²", "１７００００００００", "١٧٠٠٠٠٠٠٠٠", "17000000⁰⁰", " 12", "-1", "+1"]
)
async def test_non_ascii_digit_timestamp_is_401_not_a_500(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection, timestamp: str
) -> None:
    """`X-Paperclip-Timestamp: ²` passed str.isdigit() and then failed int(): an unauthenticated 500."""
    hook = await make_hook(api, admin_token, "hmac_sha256")
    body = b"{}"
    signature = hook.headers(body)["X-Paperclip-Signature"]
    request = raw_fire(
        hook,
        {
            "Content-Type": b"application/json",
            "X-Paperclip-Timestamp": timestamp.encode(),
            "X-Paperclip-Signature": signature.encode(),
        },
        body,
    )
    status, answer = await raw_request(gateway_server.host, port(gateway_server), request)
    assert status == 401, answer
    assert json.loads(answer)["error"] == "webhook authentication failed"
    assert await run_count(db) == 0


async def _closed_by_server(host: str, port_: int, send: list[tuple[bytes, float]], within: float) -> bytes:
    """Connect, send the pieces (each followed by its pause) while the server lets us, and return
    everything the server sent before closing. Fails if it is still open after `within` seconds."""
    reader, writer = await asyncio.open_connection(host, port_)

    async def trickle() -> None:
        try:
            for data, pause in send:
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(pause)
        except (ConnectionError, OSError):
            pass

    sender = asyncio.create_task(trickle())
    try:
        received = await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        raise AssertionError(f"connection still open after {within} s") from None
    finally:
        sender.cancel()
        writer.close()
    return received


@pytest.mark.e2e
async def test_slow_or_silent_connections_are_closed_not_kept_forever(
    api: Client, admin_token: str, stack: Stack, tmp_path: Path
) -> None:
    """Idle connections, partial headers, headers trickled byte by byte, and a body that stops
    coming used to stay open indefinitely (> 150 s observed)."""
    hook = await make_hook(api, admin_token, "bearer")
    gateway = start_service("webhook-gateway", stack.env(header_timeout_sec=1, body_timeout_sec=2), tmp_path)
    try:
        head = (
            f"POST {hook.path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {hook.secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        ).encode()
        cases = {
            "idle": [],
            "partial headers": [(head[:40], 0.0)],
            "trickled headers": [(bytes([b]), 0.2) for b in head],
            "partial body": [(head + b'{"a": ', 0.0)],
            "trickled body": [(head, 0.0)] + [(b" ", 0.5)] * 100,
        }
        results = await asyncio.gather(
            *(_closed_by_server("127.0.0.1", gateway.port, send, within=20) for send in cases.values())
        )
        answers = dict(zip(cases, results, strict=True))
        for name in ("idle", "partial headers", "trickled headers"):
            assert answers[name] == b"", name  # closed without an answer: no request was made
        for name in ("partial body", "trickled body"):
            status_line, _, rest = answers[name].partition(b"\r\n")
            assert status_line.startswith(b"HTTP/1.1 408"), (name, answers[name][:200])
            assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"].startswith("request body")
        # A normal request on a fresh connection is still served.
        async with aiohttp.ClientSession() as http:
            async with http.post(gateway.url + hook.path, headers=hook.headers(b"")) as resp:
                assert resp.status == 202
    finally:
        gateway.kill()
