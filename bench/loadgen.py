"""Load generators: wrk (closed loop, for the maximum rate), an asyncio open-loop client (fixed
rate) and `RawHttp`, the keep-alive HTTP/1.1 client under it, lean enough to generate load on
the host it measures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

WRK_SCRIPT = Path(__file__).resolve().parent / "signed_fires.lua"


@dataclass(frozen=True)
class SignedFire:
    path: str
    timestamp: str
    signature: str
    body: bytes


def signed_fires(hooks: list[tuple[str, str]], count: int, start: int = 0) -> Iterator[SignedFire]:
    """Unique `hmac_sha256` deliveries, round-robin over the hooks, signed now."""
    ts = str(int(time.time()))
    for i in range(start, start + count):
        public_id, secret = hooks[i % len(hooks)]
        body = b'{"n":%d}' % i
        signature = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        yield SignedFire(f"/api/routine-triggers/public/{public_id}/fire", ts, signature, body)


def write_requests(path: Path, fires: Iterator[SignedFire]) -> None:
    with path.open("w") as out:
        for f in fires:
            out.write(
                f"{f.path}\tX-Paperclip-Timestamp={f.timestamp}\tX-Paperclip-Signature={f.signature}"
                f"\t{f.body.decode()}\n"
            )


def webhook_request(host: str, fire: SignedFire) -> bytes:
    """A signed fire as the bytes of an HTTP/1.1 request."""
    return (
        f"POST {fire.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Paperclip-Timestamp: {fire.timestamp}\r\nX-Paperclip-Signature: {fire.signature}\r\n"
        f"Content-Length: {len(fire.body)}\r\n\r\n"
    ).encode() + fire.body


class _Exchange(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers framed by Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.buffer = b""
        self.closed = False
        self.idle_since = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionResetError("closed before the answer"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.answer is None:
            return
        head = self.buffer[:head_end].decode("latin-1").lower()
        length = (
            int(head.split("content-length:", 1)[1].split("\r\n", 1)[0]) if "content-length:" in head else 0
        )
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return
        status, body = int(head[9:12]), self.buffer[head_end + 4 : end]
        self.buffer = self.buffer[end:]
        answer, self.answer = self.answer, None
        self.idle_since = time.monotonic()
        if "connection: close" in head and self.transport is not None:
            self.transport.close()
        if not answer.done():
            answer.set_result((status, body))

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer


class RawHttp:
    """Requests as prepared bytes over a pool of keep-alive connections (at most `limit`; a request
    finding none free opens one, or waits for one once there are `limit`). About a tenth of
    aiohttp's client CPU per request — in a soak on a 2-core host the load generator's CPU is taken
    from the services it measures. A connection idle for `idle_sec` (below the services' 10 s
    keep-alive) is not reused, so a request never races the server closing it."""

    def __init__(self, host: str, port: int, limit: int = 1024, idle_sec: float = 5.0) -> None:
        self.host, self.port, self.limit, self.idle_sec = host, port, limit, idle_sec
        self.idle: list[_Exchange] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def _connection(self) -> _Exchange:
        while True:
            while self.idle:
                exchange = self.idle.pop()
                if not exchange.closed and time.monotonic() - exchange.idle_since < self.idle_sec:
                    return exchange
                self._discard(exchange)
            if self.open < self.limit:
                self.open += 1
                try:
                    _, exchange = await asyncio.get_running_loop().create_connection(
                        _Exchange, self.host, self.port
                    )
                except BaseException:
                    self.open -= 1
                    self._wake()  # a request waiting for a free slot may try now
                    raise
                return exchange
            woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(woken)
            try:
                await woken
            except asyncio.CancelledError:
                if woken.done() and not woken.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                raise

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _discard(self, exchange: _Exchange) -> None:
        if exchange.transport is not None:
            exchange.transport.close()
        self.open -= 1
        self._wake()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """The status and body of the answer to one request."""
        exchange = await self._connection()
        try:
            answer = await exchange.send(raw)
        except BaseException:
            self._discard(exchange)
            raise
        if exchange.closed:
            self._discard(exchange)
        else:
            self.idle.append(exchange)
            self._wake()
        return answer

    def close(self) -> None:
        for exchange in self.idle:
            if exchange.transport is not None:
                exchange.transport.close()
        self.idle.clear()


@dataclass
class WrkResult:
    requests_per_sec: float
    ok_per_sec: float
    non_2xx: int
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    total: int

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def per_sec(self, status: int) -> float:
        return self.requests_per_sec * self.statuses.get(status, 0) / max(self.total, 1)


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
    return float(match.group(1)) * scale[match.group(2)]


def run_wrk(url: str, requests_file: Path, connections: int, seconds: float) -> WrkResult:
    """wrk replaying pre-signed requests (one thread; the other core serves)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            str(requests_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (requests_file.parent / "wrk-last.txt").write_text(out)
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    """wrk's report (with `--latency`, and the status lines our script prints)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx_match.group(1)) if non2xx_match else 0
    # A one-letter unit (s, m, h: a second or more) is padded with a space after it.
    p50_match, p99_match = (
        re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M),
        re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M),
    )
    # No latency distribution at all when not one request completed.
    p50 = _ms(p50_match.group(1)) if p50_match else math.nan
    p99 = _ms(p99_match.group(1)) if p99_match else math.nan
    statuses = {int(code): int(n) for code, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return WrkResult(rps, rps * (total - non2xx) / max(total, 1), non2xx, p50, p99, statuses, total)


@dataclass
class OpenLoopResult:
    offered: float
    achieved: float
    latencies: list[float]
    statuses: dict[int, int]


async def open_loop(
    base_url: str,
    fires: list[SignedFire],
    rate: float,
    on_accepted: Callable[[str, float], None] | None = None,
) -> OpenLoopResult:
    """Send `fires` at a fixed rate regardless of answers (no coordinated omission), over
    `RawHttp`: aiohttp's client (used until 2026-12-05) costs about ten times its CPU per
    request, taken from the gateway it measures on the same host."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None, base_url
    http = RawHttp(url.hostname, url.port)
    host = url.netloc

    async def send(fire: SignedFire, scheduled: float) -> None:
        status, body = await http.request(webhook_request(host, fire))
        done = time.perf_counter()
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(done - scheduled)  # from when it should have been sent
        if on_accepted is not None and status == 202:
            on_accepted(json.loads(body)["runId"], time.time())

    tasks = []
    started = time.perf_counter()
    try:
        for i, fire in enumerate(fires):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(fire, scheduled)))
        await asyncio.gather(*tasks)
    finally:
        http.close()
    elapsed = time.perf_counter() - started
    return OpenLoopResult(rate, len(fires) / elapsed, latencies, statuses)
