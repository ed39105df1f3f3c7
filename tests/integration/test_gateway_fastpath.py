"""The gateway's fast path (shared/fastpath.py): the same answers as aiohttp's handling, in order,
on connections that live and end as aiohttp's do."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from routines_gateway.app import COMMITTER_KEY
from shared.fastpath import FastPathHandler
from tests.integration.api_client import Client
from tests.integration.test_gateway import Hook, gateway_app, make_hook, run_count
from tests.support import Stack, served

UNKNOWN = "/api/routine-triggers/public/0123456789abcdef01234567/fire"


@pytest.fixture
async def gateway_server(stack: Stack) -> AsyncIterator[TestServer]:
    server = served(gateway_app(stack, webhook_max_body_bytes=4096, header_timeout_sec=1.0))
    await server.start_server()
    yield server
    await server.close()


def wire(path: str, headers: dict[str, str], body: bytes) -> bytes:
    fields = {"Host": "gw", **headers, "Content-Length": str(len(body))}
    return (
        f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    ).encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(fields["Content-Length"]))
    return int(lines[0].split()[1]), fields, body


async def exchange(
    server: TestServer, request: bytes, *, split: bool
) -> tuple[int, dict[str, str], bytes, bool]:
    """One request on a fresh connection — whole in one write, or its last byte 0.2 s later (then
    it cannot be whole when first received: aiohttp's handling) — its answer, and whether the
    connection was handed to aiohttp."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        if split:
            writer.write(request[:-1])
            await asyncio.sleep(0.2)
            writer.write(request[-1:])
        else:
            writer.write(request)
        answer = await read_answer(reader)
        (handler,) = [h for h in server.runner.server.connections if isinstance(h, FastPathHandler)]  # type: ignore[union-attr]
        return (*answer, handler._handed_over)
    finally:
        writer.close()


def _comparable(status: int, fields: dict[str, str], body: bytes) -> tuple[Any, ...]:
    data = json.loads(body)
    if isinstance(data, dict) and "runId" in data:
        data["runId"] = "<id>"
    names = sorted(k.lower() for k in fields if k.lower() not in ("date",))
    values = {k: v for k, v in fields.items() if k.lower() in ("content-type", "server", "retry-after")}
    return status, data, names, values


async def test_both_paths_give_the_same_answers(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """Each kind of answer the fire route gives — accepted, the original run for a retry, each
    refusal — is the same whether the fast path or aiohttp's handling served the request: status,
    body, header names (X-Request-ID echoed) and values."""
    hmac_hook = await make_hook(api, admin_token, "hmac_sha256")
    bearer = await make_hook(api, admin_token, "bearer")
    n = 0

    def fire(hook: Hook, body: bytes = b'{"a": 1}', secret: str | None = None, **extra: str) -> bytes:
        nonlocal n
        n += 1
        headers = {**hook.headers(body, secret=secret, msg_id=f"m-{n}"), "X-Request-ID": f"req-{n}", **extra}
        return wire(hook.path, headers, body)

    def twice(request: bytes) -> tuple[bytes, bytes]:
        return request, request

    keyed = fire(bearer, b'{"k": 1}', **{"Idempotency-Key": "key-1"})
    signed = fire(hmac_hook, b"{}")
    cases: dict[str, tuple[tuple[bytes, bytes], list[int]]] = {
        "accepted": ((fire(hmac_hook, b'{"a": 1}'), fire(hmac_hook, b'{"a": 2}')), [202, 202]),
        "a retry with the same key": (twice(keyed), [202, 200]),
        "the same retry again": (twice(keyed), [200, 200]),
        "key reused, other payload": (
            twice(fire(bearer, b'{"k": 2}', **{"Idempotency-Key": "key-1"})),
            [422, 422],
        ),
        "a replayed signature": (twice(signed), [202, 409]),
        "the same replay again": (twice(signed), [409, 409]),
        "bad signature": (twice(fire(hmac_hook, secret="wrong")), [401, 401]),
        "unknown webhook": (twice(wire(UNKNOWN, {"Content-Type": "application/json"}, b"{}")), [404, 404]),
        "not JSON": (twice(fire(bearer, b"{nope")), [400, 400]),
        "not a JSON object": (twice(fire(bearer, b"[1]")), [400, 400]),
        "wrong media type": (twice(fire(bearer, b"{}", **{"Content-Type": "text/plain"})), [415, 415]),
    }
    for name, ((first, second), statuses) in cases.items():
        fast = await exchange(gateway_server, first, split=False)
        slow = await exchange(
            gateway_server, second.replace(b"X-Request-ID: req-", b"X-Request-ID: zzz-"), split=True
        )
        assert (fast[0], slow[0]) == tuple(statuses), (name, fast, slow)
        assert (fast[3], slow[3]) == (False, True), name  # which path served each
        if statuses[0] == statuses[1]:
            assert _comparable(*fast[:3]) == _comparable(*slow[:3]), name
        if name != "unknown webhook":
            assert fast[1]["X-Request-ID"].startswith("req-") and slow[1]["X-Request-ID"].startswith("zzz-")
    assert await run_count(db) == 4  # accepted twice, the keyed fire once, the signed one once


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """A fire the fast path takes, a chunked one (aiohttp's), and a plain one after it, in one
    write: three answers, in order, each once; three runs."""
    hook = await make_hook(api, admin_token, "bearer")
    bodies = [b'{"n": %d}' % i for i in range(3)]
    plain = [wire(hook.path, {**hook.headers(b), "X-Request-ID": f"r{i}"}, b) for i, b in enumerate(bodies)]
    head, _, _ = plain[1].partition(b"\r\n\r\n")
    chunked = (
        re.sub(rb"Content-Length: \d+", b"Transfer-Encoding: chunked", head)
        + b"\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(bodies[1]), bodies[1])
    )
    assert gateway_server.port is not None
    reader, writer = await asyncio.open_connection(gateway_server.host, gateway_server.port)
    writer.write(plain[0] + chunked + plain[2])
    answers = [await read_answer(reader) for _ in range(3)]
    writer.close()
    assert [(a[0], a[1]["X-Request-ID"]) for a in answers] == [(202, "r0"), (202, "r1"), (202, "r2")]
    run_ids = [json.loads(a[2])["runId"] for a in answers]
    stored = await db.fetch("SELECT id::text, payload FROM routine_runs ORDER BY id")
    assert sorted(run_ids) == [r["id"] for r in stored] and len(set(run_ids)) == 3
    assert await run_count(db) == 3


async def test_many_pipelined_fires_are_answered_in_order_with_bounded_buffering(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    """300 fires written at once (far more than the fast path buffers behind the one being
    answered: it stops reading, then resumes): every one answered, in order."""
    hook = await make_hook(api, admin_token, "bearer")
    requests = [
        wire(hook.path, {**hook.headers(b"{}"), "Idempotency-Key": f"k{i}", "X-Request-ID": f"r{i}"}, b"{}")
        for i in range(300)
    ]
    assert gateway_server.port is not None
    reader, writer = await asyncio.open_connection(gateway_server.host, gateway_server.port)
    writer.write(b"".join(requests))
    answers = [await read_answer(reader) for _ in range(300)]
    writer.close()
    assert [a[1]["X-Request-ID"] for a in answers] == [f"r{i}" for i in range(300)]
    assert {a[0] for a in answers} == {202}
    assert await run_count(db) == 300


async def test_an_idle_connection_after_a_fast_answer_closes_at_the_header_timeout(
    api: Client, gateway_server: TestServer, admin_token: str
) -> None:
    """The keep-alive (header read) deadline runs again after each answer of the fast path: an
    idle client is closed after HEADER_TIMEOUT_SEC (1 s here), not kept forever; one that keeps
    sending is not closed meanwhile."""
    hook = await make_hook(api, admin_token, "bearer")
    assert gateway_server.port is not None
    reader, writer = await asyncio.open_connection(gateway_server.host, gateway_server.port)
    for i in range(4):  # 4 × 0.6 s: longer than the timeout in all, shorter between requests
        writer.write(wire(hook.path, {**hook.headers(b"{}"), "Idempotency-Key": f"k{i}"}, b"{}"))
        assert (await read_answer(reader))[0] == 202
        await asyncio.sleep(0.6)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert time.monotonic() - started < 1.0  # the last answer was 0.6 s before
    writer.close()


async def test_a_fire_being_committed_at_shutdown_is_answered(
    api: Client, stack: Stack, admin_token: str, db: asyncpg.Connection
) -> None:
    """Graceful shutdown (SIGTERM) while a fire the fast path took is being committed: it is
    answered 202 and its run is stored; an idle connection is closed."""
    hook = await make_hook(api, admin_token, "bearer")
    await db.execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$"
    )
    await db.execute(
        "CREATE TRIGGER slow_commit AFTER INSERT ON routine_runs FOR EACH STATEMENT EXECUTE FUNCTION slow_commit()"
    )
    server = served(gateway_app(stack))
    await server.start_server()
    assert server.port is not None
    idle_reader, idle_writer = await asyncio.open_connection(server.host, server.port)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(wire(hook.path, hook.headers(b"{}"), b"{}"))
    await asyncio.sleep(0.3)  # the INSERT is under way
    closing = asyncio.create_task(server.close())
    status, _fields, body = await read_answer(reader)
    await closing
    assert status == 202
    assert (
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE id = $1::uuid", json.loads(body)["runId"])
        == 1
    )
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then its connection ends too
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    writer.close()
    idle_writer.close()


async def test_a_client_that_does_not_read_its_answers_is_not_served_without_bound(
    gateway_server: TestServer,
) -> None:
    """A client pipelining requests and reading no answer: once the answers it has not read fill
    the transport's buffer, the gateway stops reading its requests (as aiohttp's handling does)
    instead of holding an ever longer queue of answers in memory; and what it has received but
    not yet served stays bounded too."""
    assert gateway_server.port is not None
    requests = wire(UNKNOWN, {"Content-Type": "application/json"}, b"{}") * 40_000  # ~6 MB, ~12 MB of answers
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(3)
    await asyncio.get_running_loop().sock_connect(sock, (gateway_server.host, gateway_server.port))
    sock.settimeout(3)

    def send() -> None:
        with contextlib.suppress(TimeoutError, OSError):
            sock.sendall(requests)

    sending = asyncio.create_task(asyncio.to_thread(send))
    await asyncio.sleep(0.5)
    (handler,) = [h for h in gateway_server.runner.server.connections if isinstance(h, FastPathHandler)]  # type: ignore[union-attr]
    buffered: list[tuple[int, int]] = []
    for _ in range(20):
        await asyncio.sleep(0.1)
        # (Closed means it took every request and queued every answer, then went idle.)
        assert handler.transport is not None, (
            f"served all 40,000 unread answers within {len(buffered) / 10} s"
        )
        buffered.append((handler.transport.get_write_buffer_size(), len(handler._unread)))
    # Answers waiting to be written; requests received, waiting to be read: a read's worth or so.
    assert max(answers for answers, _ in buffered) < 256 * 1024, buffered
    assert max(unread for _, unread in buffered) < 512 * 1024, buffered
    sock.close()
    await sending


async def test_a_fire_whose_commit_is_cancelled_closes_its_connection(
    api: Client, stack: Stack, admin_token: str
) -> None:
    """A group-commit writer cancelled under a fire (its batch's fires get CancelledError) ends
    that connection at once, as aiohttp's handling does — not left open and unanswered forever."""
    hook = await make_hook(api, admin_token, "bearer")
    app = gateway_app(stack, header_timeout_sec=1.0)

    async def cancelled(_run: Any) -> bool:
        raise asyncio.CancelledError

    server = served(app)
    await server.start_server()
    app[COMMITTER_KEY].submit = cancelled  # type: ignore[method-assign,assignment]
    try:
        assert server.port is not None
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(wire(hook.path, hook.headers(b"{}"), b"{}"))
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 0.5
        writer.close()
    finally:
        await server.close()


async def test_requests_without_an_id_each_get_a_new_random_one(
    api: Client, gateway_server: TestServer, admin_token: str
) -> None:
    """Pipelined fires without X-Request-ID are each given their own id — 32 hex digits, random
    (a client that saw one cannot name the next: consecutive ids share no prefix) — and a client's
    safe id is echoed, an unsafe one replaced."""
    hook = await make_hook(api, admin_token, "bearer")
    assert gateway_server.port is not None
    reader, writer = await asyncio.open_connection(gateway_server.host, gateway_server.port)
    bodies = [b'{"n": %d}' % i for i in range(6)]
    headers: list[dict[str, str]] = [
        {},
        {},
        {},
        {},
        {"X-Request-ID": "mine-1"},
        {"X-Request-ID": "no spaces"},
    ]
    writer.write(
        b"".join(wire(hook.path, {**hook.headers(b), **h}, b) for b, h in zip(bodies, headers, strict=True))
    )
    ids = [(await read_answer(reader))[1]["X-Request-ID"] for _ in bodies]
    writer.close()
    generated = [*ids[:4], ids[5]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in generated), ids
    assert len(set(generated)) == 5
    assert all(a[:8] != b[:8] for a, b in itertools.pairwise(generated)), ids
    assert ids[4] == "mine-1"
