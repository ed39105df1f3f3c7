"""The soak's load generator (`bench.loadgen.RawHttp`) against a raw local server: answers framed
in pieces, connections reused and bounded, a server hanging up mid-request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import pytest

from bench.loadgen import RawHttp, open_loop, signed_fires


class Server:
    """Answers each `POST` with its body (with `run_ids`, as a gateway's 202 naming `n` of a
    `{"n": …}` body as its run); `split` sends the answer in three writes."""

    def __init__(self, split: bool = False, hang_up: bool = False, run_ids: bool = False) -> None:
        self.split, self.hang_up, self.run_ids = split, hang_up, run_ids
        self.connections = 0
        self.open = 0
        self.most_open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                if self.hang_up:
                    return
                await asyncio.sleep(0.01)
                if self.run_ids:
                    body = json.dumps({"runId": json.loads(body)["n"]}).encode()
                answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                parts = [answer[:7], answer[7:30], answer[30:]] if self.split else [answer]
                for part in parts:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.005 if self.split else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[int]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


def post(n: int) -> bytes:
    body = b'{"n":%d}' % n
    return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("split", [False, True])
async def test_answers_are_framed_and_connections_kept_alive(split: bool) -> None:
    server = Server(split=split)
    async with serving(server) as port:
        http = RawHttp("127.0.0.1", port)
        try:
            answers = [await http.request(post(n)) for n in range(30)]
        finally:
            http.close()
    assert answers == [(202, b'{"n":%d}' % n) for n in range(30)]
    assert server.connections == 1


async def test_concurrent_requests_share_at_most_limit_connections() -> None:
    server = Server()
    async with serving(server) as port:
        http = RawHttp("127.0.0.1", port, limit=4)
        try:
            answers = await asyncio.gather(*(http.request(post(n)) for n in range(40)))
        finally:
            http.close()
    assert answers == [(202, b'{"n":%d}' % n) for n in range(40)]
    assert server.most_open == 4


async def test_a_server_hanging_up_fails_the_request_and_frees_its_connection() -> None:
    server = Server(hang_up=True)
    async with serving(server) as port:
        http = RawHttp("127.0.0.1", port, limit=1)
        try:
            for n in range(3):  # with the one connection leaked, the second request would wait forever
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(http.request(post(n)), 5)
        finally:
            http.close()
    assert server.connections == 3


async def test_a_refused_connection_lets_the_next_request_try() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        http = RawHttp("127.0.0.1", port, limit=1)
        results = await asyncio.wait_for(
            asyncio.gather(http.request(post(1)), http.request(post(2)), return_exceptions=True), 5
        )
    assert [type(r) for r in results] == [ConnectionRefusedError, ConnectionRefusedError]


async def test_the_open_loop_sends_every_fire_and_reports_every_answer() -> None:
    server = Server(run_ids=True)
    fires = list(signed_fires([("a" * 24, "secret")], 60))
    accepted: list[int] = []
    async with serving(server) as port:
        result = await open_loop(
            f"http://127.0.0.1:{port}", fires, 600, on_accepted=lambda run, _at: accepted.append(int(run))
        )
    assert result.statuses == {202: 60}
    assert len(result.latencies) == 60 and min(result.latencies) >= 0.01  # the server's 10 ms
    assert sorted(accepted) == list(range(60))
    assert result.achieved <= 600 * 1.05  # sent at the rate, not as fast as it could
