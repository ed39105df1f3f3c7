"""Load generators: wrk (closed loop, for the maximum rate) and an asyncio open-loop client (fixed rate)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

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
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match.group(2)]


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
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx_match.group(1)) if non2xx_match else 0
    p50_match, p99_match = (
        re.search(r"^\s+50%\s+(\S+)$", out, re.M),
        re.search(r"^\s+99%\s+(\S+)$", out, re.M),
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
    """Send `fires` at a fixed rate regardless of answers (no coordinated omission)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def send(fire: SignedFire, scheduled: float) -> None:
            headers = {
                "Content-Type": "application/json",
                "X-Paperclip-Timestamp": fire.timestamp,
                "X-Paperclip-Signature": fire.signature,
            }
            async with http.post(base_url + fire.path, data=fire.body, headers=headers) as resp:
                data = await resp.json()
                done = time.perf_counter()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(done - scheduled)  # from when it should have been sent
            if on_accepted is not None and resp.status == 202:
                on_accepted(data["runId"], time.time())

        tasks = []
        started = time.perf_counter()
        for i, fire in enumerate(fires):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(fire, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return OpenLoopResult(rate, len(fires) / elapsed, latencies, statuses)
