"""Gateway hardening (issue 11): each test is named after the defect it guards against."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routines_gateway.app import create_app as gateway_app_with
from routines_gateway.ingest import GroupCommitter, PendingRun
from shared.crypto import new_secret_key
from shared.db import Database
from shared.errors import BadRequest
from shared.http import SETTINGS_KEY
from shared.settings import GatewaySettings
from tests.integration.api_client import Client, call
from tests.integration.test_gateway import MODES, Hook, gateway_app, make_hook, run_count
from tests.netproxy import segmenting_proxy
from tests.support import Stack, served, start_service

LIMIT = 256 * 1024


@pytest.fixture
async def gateway_server(stack: Stack) -> AsyncIterator[TestServer]:
    """A gateway on a real port with the default body limit (256 KiB)."""
    server = served(gateway_app(stack, webhook_max_body_bytes=LIMIT))
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


@pytest.mark.parametrize("mode", ["bearer", "hmac_sha256"])
async def test_a_body_that_arrives_whole_with_its_headers_is_held_to_the_limit(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection, mode: str
) -> None:
    """A body already complete when the handler runs is taken as it is, without waiting (the
    gateway's fast path): it must meet the same limit, to the byte, as one read in pieces —
    chunked bodies carry no length to refuse up front."""
    hook = await make_hook(api, admin_token, mode)
    server = served(gateway_app(stack, webhook_max_body_bytes=1024))
    await server.start_server()
    try:
        answers = {}
        cases = ((1024, True), (1025, True), (1024, False), (1025, False))
        for n, (size, chunked) in enumerate(cases):
            request = _signed_raw(hook, body_of(size, n), {}, chunked, int(time.time()), tamper=False)
            status, answer = await raw_request(server.host, port(server), request)  # one write
            answers[size, chunked] = status, json.loads(answer)
    finally:
        await server.close()
    assert {key: status for key, (status, _) in answers.items()} == {
        (1024, True): 202,
        (1025, True): 413,
        (1024, False): 202,
        (1025, False): 413,
    }, answers
    assert "exceeds 1024 bytes" in answers[1025, True][1]["error"]
    # Each accepted body is stored whole, its answer naming its own run.
    for n, size, chunked in ((0, 1024, True), (2, 1024, False)):
        stored = await db.fetchval(
            "SELECT payload FROM routine_runs WHERE id = $1::uuid", answers[size, chunked][1]["runId"]
        )
        assert stored == json.loads(body_of(size, n))
    assert await run_count(db) == 2


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


async def half_closed(host: str, port_: int, data: bytes, within: float = 5.0) -> bytes:
    """Send `data`, shut down our side (FIN: nothing more will come), and return everything the
    server sends before it closes. Fails if it is still open after `within` seconds."""
    reader, writer = await asyncio.open_connection(host, port_)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(), within)
        except TimeoutError:
            raise AssertionError(f"connection still open {within} s after the client's FIN") from None
    finally:
        writer.close()


def _cut_in_one_read(port_: int, hook: Hook) -> bytes:
    """On a keep-alive connection whose receive buffer an 8 MB request has grown, 256,000 bytes —
    large headers and the start of a body — then the FIN: uvloop then reports the request and the
    FIN in one read, before the server has begun handling it. Everything the server sends after
    (failing if the connection is still open 5 s after the FIN)."""
    with socket.create_connection(("127.0.0.1", port_)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        warm = 8 << 20
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: g\r\nContent-Length: %d\r\n\r\n" % warm + b"w" * warm)
        answer = b""
        while b'"ok"' not in answer:
            chunk = sock.recv(65536)
            assert chunk, "closed before answering the warm-up request"
            answer += chunk
        time.sleep(0.3)
        pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 7900) for i in range(18))
        head = (
            (
                f"POST {hook.path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {hook.secret}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200000\r\n"
            ).encode()
            + pad
            + b"\r\n"
        )
        sock.sendall(head + b'{"n": "' + b"b" * (256_000 - len(head) - 7))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            raise AssertionError("connection still open 5 s after the client's FIN") from None
        return received


@pytest.mark.parametrize("where", ["in-process", "service process (uvloop)"])
async def test_a_client_that_half_closes_after_its_request_still_gets_its_answer(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection, tmp_path: Path, where: str
) -> None:
    """A sender that shuts down its side once the request is written (HTTP/1.0-style scripts,
    `nc -N`) used to get no answer although its run was recorded: aiohttp closed the connection
    on the FIN, and a retry made a second run. It now gets its 202 and then the connection is
    closed; of requests pipelined before the FIN, the first is answered (one cut short behind
    it does not lose it that answer). A body cut short by the FIN is still never stored — also
    when the request and the FIN arrive in one read, before its handling begins — and an idle
    connection the client half-closes is closed at once, as before."""
    hook = await make_hook(api, admin_token, "bearer")
    headers = {"Authorization": f"Bearer {hook.secret}".encode(), "Content-Type": b"application/json"}
    whole = raw_fire(hook, headers, b'{"n": 1}').replace(b"Connection: close\r\n", b"")  # keep-alive
    cut = raw_fire(hook, headers, b'{"n": 2, "padding": "' + b"x" * 100 + b'"}')[:-40]
    first = raw_fire(hook, headers, b'{"n": 3}').replace(b"Connection: close\r\n", b"")
    if where == "in-process":
        server = served(gateway_app(stack))
        await server.start_server()
        host, port_, stop = server.host, port(server), server.close
    else:
        gateway = start_service("webhook-gateway", stack.env(), tmp_path)
        host, port_ = "127.0.0.1", gateway.port

        async def stop() -> None:
            gateway.kill()

    try:
        answered, cut_short, idle, pipelined = await asyncio.gather(
            half_closed(host, port_, whole),
            half_closed(host, port_, cut),
            half_closed(host, port_, b""),
            half_closed(host, port_, first + cut),
        )
        cut_in_one_read = await asyncio.to_thread(_cut_in_one_read, port_, hook)
    finally:
        await stop()
    for received, payload in ((answered, {"n": 1}), (pipelined, {"n": 3})):
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202"), received[:300]
        assert b"HTTP/1.1" not in body  # one answer
        run_id = json.loads(body)["runId"]
        assert await db.fetchval("SELECT payload FROM routine_runs WHERE id = $1::uuid", run_id) == payload
    assert cut_short == b"" and idle == b"" and cut_in_one_read == b""
    assert await _runs_of(db, hook) == 2


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


def _pending(hook: Hook, payload: dict[str, Any], key: str) -> PendingRun:
    routine, company = uuid.UUID(hook.routine["id"]), uuid.UUID(hook.tenant.company_id)
    return PendingRun(routine, company, uuid.UUID(hook.trigger["id"]), payload, key, None, None)


async def _runs_of(db: asyncpg.Connection, hook: Hook) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", hook.routine["id"])
    )


@asynccontextmanager
async def _gateway_database(stack: Stack) -> AsyncIterator[Database]:
    """A pool with the gateway's settings, for driving its group commit directly."""
    settings = gateway_app(stack).get(SETTINGS_KEY)
    assert settings is not None
    database = Database(settings, application_name="test")
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def test_group_commit_data_error_fails_only_the_bad_row(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection
) -> None:
    """A row the database refuses (here jsonb's \\u0000, which the edge would have refused) sits in
    one batch with 50 good rows of another tenant: only that row fails, the others are stored."""
    bad = await make_hook(api, admin_token, "bearer")
    good = await make_hook(api, admin_token, "bearer")
    announced: list[PendingRun] = []

    async def announce(runs: Sequence[PendingRun]) -> None:
        announced.extend(runs)

    async with _gateway_database(stack) as database:
        committer = GroupCommitter(database, max_batch=256, writers=1, announce=announce)
        goods = [_pending(good, {"i": i}, f"k{i}") for i in range(50)]
        poison = _pending(bad, {"a": "\x00"}, "poison")
        submitted = [asyncio.ensure_future(committer.submit(p)) for p in [*goods[:25], poison, *goods[25:]]]
        await asyncio.sleep(0)  # all queued before the writer takes its first batch
        stopping = asyncio.Event()
        writer = asyncio.ensure_future(committer.run(stopping))
        results = await asyncio.gather(*submitted, return_exceptions=True)
        stopping.set()
        await writer
    assert isinstance(results[25], BadRequest)
    assert results[:25] + results[26:] == [True] * 50
    assert await _runs_of(db, good) == 50
    assert sorted(p.id for p in announced) == sorted(p.id for p in goods)  # the refused row is not


class _StuckAnnouncement:
    """An announcement that records whether its runs were answered yet, then raises or hangs."""

    def __init__(self, raises: bool) -> None:
        self.raises = raises
        self.answered_before: list[bool] = []
        self.called = asyncio.Event()

    async def __call__(self, runs: Sequence[PendingRun]) -> None:
        self.answered_before.extend(p.done.done() for p in runs)
        self.called.set()
        if self.raises:
            raise RuntimeError("announce broke")
        await asyncio.Event().wait()  # until the writer is cancelled


@pytest.mark.parametrize("failure", ["raises", "cancelled"])
async def test_fires_are_answered_when_announcing_their_commit_fails(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection, failure: str
) -> None:
    """The runs are committed before they are announced: an announcement that raises, or a writer
    cancelled while announcing (a stop), must still answer every fire of the batch — the sweeper
    announces what was not — and a raising announcement must not end the writer."""
    hook = await make_hook(api, admin_token, "bearer")
    announce = _StuckAnnouncement(raises=failure == "raises")
    async with _gateway_database(stack) as database:
        committer = GroupCommitter(database, max_batch=256, writers=1, announce=announce)
        submitted = [
            asyncio.ensure_future(committer.submit(_pending(hook, {"i": i}, f"k{i}"))) for i in range(3)
        ]
        stopping = asyncio.Event()
        writer = asyncio.ensure_future(committer.run(stopping))
        await asyncio.wait_for(announce.called.wait(), 10)
        if failure == "cancelled":
            writer.cancel()
        assert await asyncio.wait_for(asyncio.gather(*submitted), 10) == [True] * 3
        if failure == "raises":  # the writer lives on: the next fire is committed and answered
            assert await asyncio.wait_for(committer.submit(_pending(hook, {"i": 3}, "k3")), 10) is True
            stopping.set()
            await writer
        else:
            with pytest.raises(asyncio.CancelledError):
                await writer
    assert announce.answered_before[:3] == [False] * 3  # announced before they were answered
    assert await _runs_of(db, hook) == (4 if failure == "raises" else 3)


async def test_a_stop_while_retrying_a_batch_one_by_one_answers_the_fires_not_yet_sent(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection
) -> None:
    """A batch holding a row the database refuses is retried one fire at a time. A writer cancelled
    meanwhile (a stop) must answer the fires it has not sent yet, not leave their clients waiting."""
    hook = await make_hook(api, admin_token, "bearer")
    announce = _StuckAnnouncement(raises=False)
    async with _gateway_database(stack) as database:
        committer = GroupCommitter(database, max_batch=256, writers=1, announce=announce)
        fires = [
            _pending(hook, {"i": 0}, "k0"),
            _pending(hook, {"a": "\x00"}, "poison"),
            _pending(hook, {"i": 1}, "k1"),
        ]
        submitted = [asyncio.ensure_future(committer.submit(p)) for p in fires]
        await asyncio.sleep(0)  # one batch
        writer = asyncio.ensure_future(committer.run(asyncio.Event()))
        await asyncio.wait_for(announce.called.wait(), 10)  # the first fire, retried alone
        writer.cancel()
        results = await asyncio.wait_for(asyncio.gather(*submitted, return_exceptions=True), 10)
        with pytest.raises(asyncio.CancelledError):
            await writer
    assert results[0] is True
    assert [type(r) for r in results[1:]] == [asyncio.CancelledError] * 2
    assert await _runs_of(db, hook) == 1


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
    async with TestClient(served(gateway_app(stack))) as gateway:
        statuses = []
        for i, secret in enumerate(secrets):
            body = json.dumps({"i": i}).encode()
            resp = await gateway.post(hook.path, data=body, headers=hook.headers(body, secret=secret))
            statuses.append(resp.status)
    assert statuses == [401, 401, 401, 202, 202]


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


@pytest.mark.parametrize("first_has_id", [True, False], ids=["id-then-none", "none-then-id"])
async def test_github_signature_replayed_with_or_without_a_delivery_id_makes_no_second_run(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection, first_has_id: bool
) -> None:
    """A signature already seen for the trigger never makes a second run, whatever the delivery id
    says: a captured delivery re-sent with X-GitHub-Delivery removed (or a delivery first sent
    without one, re-sent with a fresh id) used to make one more run."""
    hook = await make_hook(api, admin_token, "github_hmac")
    body = b'{"action": "closed"}'
    with_id = hook.headers(body, msg_id="delivery-7")
    without_id = {k: v for k, v in with_id.items() if k != "X-GitHub-Delivery"}
    first, second = (with_id, without_id) if first_has_id else (without_id, with_id)
    async with aiohttp.ClientSession() as http:
        url = str(gateway_server.make_url(hook.path))
        accepted = await post(http, url, body, first, chunked=False)
        replayed = await post(http, url, body, second, chunked=False)
        empty_id = await post(http, url, body, {**with_id, "X-GitHub-Delivery": ""}, chunked=False)
    assert accepted[0] == 202
    assert replayed[0] == 409
    # An empty id is no id: a resend of the id-less delivery is its redelivery (the original run).
    assert empty_id == ((409, empty_id[1]) if first_has_id else (200, {**accepted[1], "duplicate": True}))
    assert await run_count(db) == 1


async def test_a_delivery_id_posing_as_a_signature_key_is_refused(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """`X-GitHub-Delivery: sig:<the signature>` made the delivery's key look like an hmac_sha256
    signature key, which the signature index leaves out: a captured delivery replayed so made a
    second run (review of 945a24b)."""
    hook = await make_hook(api, admin_token, "github_hmac")
    body = b'{"action": "reopened"}'
    headers = hook.headers(body, msg_id="delivery-9")
    signature = headers["X-Hub-Signature-256"].removeprefix("sha256=")
    async with aiohttp.ClientSession() as http:
        url = str(gateway_server.make_url(hook.path))
        first = await post(http, url, body, headers, chunked=False)
        posing = [
            await post(
                http, url, body, {**headers, "X-GitHub-Delivery": f"{prefix}{signature}"}, chunked=False
            )
            for prefix in ("sig:", "github-sig:")
        ]
    assert first[0] == 202
    assert [status for status, _ in posing] == [400, 400]
    assert posing[0][1]["error"] == "delivery id must not start with sig: or github-sig:"
    assert await run_count(db) == 1


async def test_an_encoded_body_is_refused_415_at_the_gateway(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """`Content-Encoding: gzip` on a plain body was a 500 before any check (the decompressor failed),
    and on a gzipped one the signature was checked over the inflated bytes, not those sent."""
    hook = await make_hook(api, admin_token, "hmac_sha256")
    body = gzip.compress(b'{"n": 1}')
    async with aiohttp.ClientSession() as http:
        url = str(gateway_server.make_url(hook.path))
        for sent in (b'{"n": 1}', body):
            status, answer = await post(
                http, url, sent, {**hook.headers(sent), "Content-Encoding": "gzip"}, chunked=False
            )
            assert status == 415, answer
    assert await run_count(db) == 0


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


async def closed_by_server(host: str, port_: int, send: list[tuple[bytes, float]], within: float) -> bytes:
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
            *(closed_by_server("127.0.0.1", gateway.port, send, within=20) for send in cases.values())
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


async def manual_run(hook: Hook, payload: dict[str, Any], key: str) -> tuple[int, Any]:
    resp = await hook.api.post(
        f"/api/routines/{hook.routine['id']}/run",
        json={"payload": payload, "idempotencyKey": key},
        headers={"Authorization": f"Bearer {hook.tenant.board}"},
    )
    return resp.status, await resp.json()


async def test_idempotency_keys_are_scoped_per_source_and_bound_to_the_payload(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """A webhook's Idempotency-Key used to match a manual run of the same routine (200 with that
    run), and a key reused with another payload silently returned the first run."""
    hook = await make_hook(api, admin_token, "bearer")
    second = await call(
        api,
        "POST",
        f"/api/routines/{hook.routine['id']}/triggers",
        hook.tenant.board,
        {"kind": "webhook", "signingMode": "bearer"},
        201,
    )
    hook2 = Hook(api, hook.tenant, hook.routine, second)
    body = b'{"order": 7}'
    async with aiohttp.ClientSession() as http:

        async def fire(h: Hook, data: bytes) -> tuple[int, Any]:
            headers = {**h.headers(data), "Idempotency-Key": "order-7"}
            return await post(http, str(gateway_server.make_url(h.path)), data, headers, chunked=False)

        manual = await manual_run(hook, {"order": 7}, "order-7")
        first = await fire(hook, body)
        other_trigger = await fire(hook2, body)
        retried = await fire(hook, body)
        changed = await fire(hook, b'{"order": 8}')
        manual_again = await manual_run(hook, {"order": 7}, "order-7")
        manual_changed = await manual_run(hook, {"order": 8}, "order-7")
    assert manual[0] == 202
    assert first[0] == 202 and first[1]["runId"] != manual[1]["id"]
    assert other_trigger[0] == 202 and other_trigger[1]["runId"] != first[1]["runId"]
    assert (retried[0], retried[1]["runId"]) == (200, first[1]["runId"])
    assert changed[0] == 422 and "Idempotency-Key" in changed[1]["error"]
    assert (manual_again[0], manual_again[1]["id"]) == (200, manual[1]["id"])
    assert manual_changed[0] == 422 and "idempotencyKey" in manual_changed[1]["error"]
    assert await run_count(db) == 3


def cache_lookups(result: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("routines_gateway_trigger_cache_total", {"result": result}) or 0.0


async def test_unknown_public_id_probes_are_not_a_database_query_each(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Every probe of an unknown publicId was a database query. Now a miss is remembered for a
    short time, and one client's stream of unknown ids runs into the failed-attempt limit — which
    refuses its probes, never its deliveries to webhooks that exist (a provider's address delivers
    for every tenant; test_ratelimit.py has the cross-tenant case)."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(stack, rate_limit_failed_burst=30, rate_limit_failed_per_sec=0.01)
    unknown = "/api/routine-triggers/public/" + "ab" * 12 + "/fire"
    async with TestClient(served(app)) as gateway:
        misses = cache_lookups("miss")
        repeated = [(await gateway.post(unknown, headers={"X-Forwarded-For": "x"})).status for _ in range(20)]
        assert repeated == [404] * 20
        assert cache_lookups("miss") - misses == 1  # one database query for twenty probes
        random_ids = [
            (await gateway.post(f"/api/routine-triggers/public/{uuid.uuid4().hex[:24]}/fire")).status
            for _ in range(15)
        ]
        assert random_ids == [404] * 10 + [429] * 5
        assert (await gateway.post(hook.path, headers=hook.headers(b""))).status == 202  # same client


# --- Signed fuzzing: generated bodies and headers get past verification, into parsing, storage
# and the group commit, while other tenants fire at the same time. ---


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


json_atoms = st.one_of(
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.sampled_from(
        [
            b"1e400",
            b"-1e999",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1" * 5000,
            b"0." + b"0" * 400 + b"1",
            b"1e-400",
        ]
    ),
    st.text(max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b'"\\u0000"', b'"\\ud800"', b'"\\udfff\\ud800"', b'"\xff\xfe"', b"true", b"null", b"[]"]
    ),
)
fuzz_bodies = st.one_of(
    st.lists(st.tuples(st.sampled_from(["a", "b", "ü", "\u2028"]), json_atoms), max_size=4).map(
        lambda pairs: b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in pairs) + b"}"
    ),  # duplicate keys happen: keys come from a small set
    st.integers(55, 75).map(_nested),
    st.integers(55, 75).map(lambda d: b'{"x":' + b"[" * d + b"]" * d + b"}"),
    st.binary(max_size=200),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40).map(
        str.encode
    ),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b.strip() == b),
    st.integers(256, 6000).map(lambda n: b"k" * n),
)


def _signed_raw(
    hook: Hook, body: bytes, extra: dict[str, bytes], chunked: bool, ts: int, tamper: bool
) -> bytes:
    """A raw request signed for `hook` (headers as bytes, so non-ASCII values go on the wire);
    with `tamper`, the signature (bearer: the token) has one byte changed."""
    mode = hook.trigger["signingMode"]
    headers = {k.encode(): v.encode() for k, v in hook.headers(b"{}", ts=ts).items()}
    headers.update({k.encode(): v for k, v in extra.items()})
    secret = hook.secret.encode()
    if mode == "hmac_sha256":
        signature = hmac.new(secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
        headers[b"X-Paperclip-Signature"] = signature.encode()
    elif mode == "github_hmac":
        signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
        headers[b"X-Hub-Signature-256"] = b"sha256=" + signature.encode()
    elif mode == "standard_webhooks":
        key = base64.b64decode(hook.secret.removeprefix("whsec_"))
        message = headers[b"webhook-id"] + b"." + str(ts).encode() + b"." + body
        headers[b"webhook-signature"] = b"v1," + base64.b64encode(
            hmac.new(key, message, hashlib.sha256).digest()
        )
    if tamper:
        name = SIGNATURE_HEADERS[mode]
        value = headers[name]
        headers[name] = value[:-2] + (b"0" if value[-2:-1] != b"0" else b"1") + value[-1:]
    lines = [f"POST {hook.path} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers.items()]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + 97] for i in range(0, len(body), 97)]
        framed = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: " + str(len(body)).encode())
        framed = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + framed


SIGNATURE_HEADERS = {
    "bearer": b"Authorization",
    "hmac_sha256": b"X-Paperclip-Signature",
    "github_hmac": b"X-Hub-Signature-256",
    "standard_webhooks": b"webhook-signature",
}


class FuzzWorld:
    """Hooks made once per test (hypothesis runs every example inside one test call)."""

    targets: list[Hook]
    others: list[Hook]
    sent = 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.integers(0, 3),
    body=fuzz_bodies,
    extra=st.dictionaries(
        st.sampled_from(
            ["Idempotency-Key", "X-GitHub-Delivery", "webhook-id", "Content-Type", "X-Forwarded-For"]
        ),
        header_values,
        max_size=2,
    ),
    chunked=st.booleans(),
    tamper=st.booleans(),
)
async def test_signed_fuzz_never_5xx_never_hurts_other_tenants_never_an_unsigned_run(
    api: Client,
    fuzz_gateway: TestServer,
    admin_token: str,
    db: asyncpg.Connection,
    target: int,
    body: bytes,
    extra: dict[str, bytes],
    chunked: bool,
    tamper: bool,
) -> None:
    world: FuzzWorld = getattr(fuzz_gateway, "fuzz_world", None) or FuzzWorld()
    if not hasattr(world, "targets"):
        world.targets = [await make_hook(api, admin_token, mode) for mode in MODES]
        world.others = [await make_hook(api, admin_token, mode) for mode in ("hmac_sha256", "bearer")]
        fuzz_gateway.fuzz_world = world  # type: ignore[attr-defined]
    hook = world.targets[target]
    world.sent += 1
    ts = int(time.time())
    if hook.trigger["signingMode"] in ("github_hmac", "standard_webhooks"):
        # A fresh delivery id per example unless the generator chose one.
        name = "X-GitHub-Delivery" if hook.trigger["signingMode"] == "github_hmac" else "webhook-id"
        extra.setdefault(name, f"fuzz-{world.sent}".encode())
    request = _signed_raw(hook, body, extra, chunked, ts, tamper)
    runs_before = await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", hook.routine["id"]
    )
    async with aiohttp.ClientSession() as http:

        async def good_fire(h: Hook, i: int) -> int:
            good_body = json.dumps({"good": world.sent, "i": i}).encode()
            headers = {**h.headers(good_body), "Idempotency-Key": f"g-{world.sent}-{i}"}
            async with http.post(fuzz_gateway.make_url(h.path), data=good_body, headers=headers) as resp:
                return resp.status

        fuzzed = asyncio.ensure_future(raw_request(fuzz_gateway.host, port(fuzz_gateway), request))
        goods = await asyncio.gather(*(good_fire(h, i) for i in range(3) for h in world.others))
        status, answer = await fuzzed
    assert goods == [202] * len(goods), goods
    assert status < 500, answer
    assert answer == b"" or "error" in json.loads(answer) or "runId" in json.loads(answer)
    runs_after = await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE routine_id = $1::uuid", hook.routine["id"]
    )
    if tamper:  # never a run without a valid signature
        refused_by_http_layer = status == 400 and b"malformed HTTP request" in answer
        assert status in (401, 413) or refused_by_http_layer, (status, answer)
    if status == 202:
        run = await db.fetchrow(
            "SELECT payload FROM routine_runs WHERE id = $1::uuid", json.loads(answer)["runId"]
        )
        assert run is not None
        assert run["payload"] == (json.loads(body) if body.strip() else {})
        assert runs_after == runs_before + 1
    else:
        assert runs_after == runs_before, (status, answer)


@pytest.fixture
async def fuzz_gateway(stack: Stack) -> AsyncIterator[TestServer]:
    server = served(gateway_app(stack, webhook_max_body_bytes=LIMIT, rate_limit_failed_burst=1_000_000))
    await server.start_server()
    yield server
    await server.close()


@pytest.mark.parametrize("skew", [-600.0, 600.0])
async def test_gateway_clock_skew_does_not_decide_timestamp_freshness(
    api: Client, admin_token: str, stack: Stack, db: asyncpg.Connection, skew: float
) -> None:
    """The gateway checked timestamps with its own time.time() while replay windows use the
    database's clock: a gateway host 10 minutes off refused every correctly timed delivery and
    accepted stale ones. It now judges by the database's clock (offset sampled)."""
    from routines_gateway.app import create_app

    hook = await make_hook(api, admin_token, "hmac_sha256")
    settings = gateway_app(stack).get(SETTINGS_KEY)
    assert isinstance(settings, GatewaySettings)
    app = create_app(settings, local_clock=lambda: time.time() + skew)  # this host's clock is off
    async with TestClient(served(app)) as gateway:
        db_now = int(await db.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))
        on_time = b'{"on": "time"}'
        by_gateway_clock = b'{"by": "gateway"}'
        good = await gateway.post(hook.path, data=on_time, headers=hook.headers(on_time, ts=db_now))
        skewed = await gateway.post(
            hook.path,
            data=by_gateway_clock,
            headers=hook.headers(by_gateway_clock, ts=db_now + int(skew)),
        )
        assert good.status == 202, await good.text()
        assert skewed.status == 401
    assert await run_count(db) == 1


async def test_a_secret_the_key_ring_cannot_open_is_503_not_a_500(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """A gateway whose ROUTINES_SECRET_KEY lacks the key a webhook's secret was sealed with (a key
    rotation done out of order) answered that webhook's senders 500 with a traceback. It is the
    deployment's fault: 503, so senders retry, and an error naming the trigger and the setting."""
    hook = await make_hook(api, admin_token, "bearer")
    config = GatewaySettings(
        database_url=stack.database_url, nats_url=stack.nats_url, secret_key=new_secret_key()
    )
    async with TestClient(served(gateway_app_with(config))) as gateway:
        resp = await gateway.post(hook.path, headers=hook.headers(b""))
        assert resp.status == 503
        assert (await resp.json())["error"] == "this webhook cannot be verified right now; retry later"


async def test_random_unknown_urls_cost_a_bounded_number_of_queries(
    api: Client, admin_token: str, stack: Stack
) -> None:
    """Failed attempts are charged per address only after the lookup (so a webhook that exists is
    never refused for its address's probes): random URLs from many addresses were a database
    query each. Lookups of publicIds the cache does not know now have a budget per process;
    known webhooks are not affected by it."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(
        stack,
        trigger_cache_ttl_sec=60,
        trigger_lookups_per_sec=0.001,
        trigger_lookups_burst=5,
        trusted_proxies=["127.0.0.0/8"],
    )
    async with TestClient(served(app)) as gateway:
        misses = cache_lookups("miss")
        assert (await gateway.post(hook.path, headers=hook.headers(b""))).status == 202  # looked up, cached
        probes = [
            (
                await gateway.post(
                    f"/api/routine-triggers/public/{uuid.uuid4().hex[:24]}/fire",
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},  # a new address each time
                )
            ).status
            for i in range(10)
        ]
        assert probes == [404] * 4 + [429] * 6
        assert cache_lookups("miss") - misses == 5  # the budget, not one per request
        assert (await gateway.post(hook.path, headers=hook.headers(b'{"n": 2}'))).status == 202
