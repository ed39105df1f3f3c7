"""Where the gateway's CPU goes at saturation: py-spy samples one gateway process while wrk
drives it (accepted signed fires, then refusals), and each sample is put in one bucket by the
innermost frame that belongs to a known part (HTTP, middleware, metrics, logging, HMAC, JSON,
group commit, publish, handler, event loop).

Run: `.venv/bin/python -m bench.profile_gateway` (needs `wrk` and py-spy: `make install` pins
py-spy; `apt-get install wrk`). Writes bench/results/gateway_profile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import RESULTS, add_webhooks, seed, servers, service_env
from bench.loadgen import run_wrk, signed_fires, write_requests
from bench.webhook_ingest import CONNECTIONS, GATEWAY_SETTINGS, refusal_requests
from shared.processes import ServiceProcess

PY_SPY = Path(sys.executable).with_name("py-spy")

# Innermost matching frame decides; checked in this order for each frame.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("metrics (prometheus_client, shared/loop_metrics.py)", ("prometheus_client", "loop_metrics.py")),
    ("logging (structlog)", ("structlog", "logging/", "shared/logging.py")),
    ("HMAC / signature check", ("hmac.py", "hashlib", "signing.py", "crypto.py")),
    ("JSON (parse, validate, dump)", ("json/", "json_response", "parse_json", "orjson")),
    ("group commit (asyncpg, Postgres)", ("asyncpg", "ingest.py", "shared/db.py")),
    ("publish (NATS)", ("nats/", "shared/bus.py", "shared/runs.py")),
    ("middleware (shared/http.py)", ("shared/http.py",)),
    ("handler (rate limits, cache, checks)", ("routines_gateway/",)),
    (
        "HTTP (the fast path; aiohttp parsing, routing, writing)",
        ("shared/fastpath.py", "aiohttp/", "multidict", "yarl"),
    ),
]
OTHER = "event loop, asyncio, other"


def bucket_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in BUCKETS:
            if any(needle in frame for needle in needles):
                return name
    return OTHER


def breakdown(raw: str) -> tuple[Counter[str], Counter[str], int]:
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        total += count
        buckets[bucket_of(stack)] += count
        leaves[stack[-1]] += count
    return buckets, leaves, total


async def profile(gateway: ServiceProcess, requests: Path, seconds: int, out: Path) -> tuple[str, float]:
    """py-spy (non-blocking, 250 Hz) on the gateway for `seconds` in the middle of a wrk run."""
    assert gateway.proc is not None
    load = asyncio.create_task(asyncio.to_thread(run_wrk, gateway.url, requests, CONNECTIONS, seconds + 2))
    await asyncio.sleep(1)
    spy = [
        str(PY_SPY), "record", "--pid", str(gateway.proc.pid), "--rate", "250", "--duration", str(seconds),
        "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    await asyncio.to_thread(subprocess.run, spy, check=True, capture_output=True)
    return out.read_text(), (await load).requests_per_sec


async def main(seconds: int = 10) -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    if not PY_SPY.exists():  # pinned in the dev extra; installed here if the venv predates it
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy==0.4.3"], check=True)
    result: dict[str, Any] = {}
    async with servers() as s:
        stack = await s.fresh_stack("profile")
        conn = await asyncpg.connect(stack.database_url)
        world = await seed(conn, 100)
        await add_webhooks(conn, world, stack.secret_key)
        await conn.close()
        gateway = ServiceProcess(
            "webhook-gateway", service_env(stack, **GATEWAY_SETTINGS), s.tmp / "gw.log"
        ).start()
        try:
            cases = {
                "accepted (202)": s.tmp / "fires.tsv",
                "unknown publicId (404)": refusal_requests(s.tmp / "r404.tsv", world.hooks, "404"),
                "wrong signature (401)": refusal_requests(s.tmp / "r401.tsv", world.hooks, "401"),
            }
            write_requests(cases["accepted (202)"], signed_fires(world.hooks, 200_000))
            for case, requests in cases.items():
                raw, rps = await profile(gateway, requests, seconds, s.tmp / "spy.txt")
                buckets, leaves, total = breakdown(raw)
                print(
                    f"\n{case}: {rps:,.0f} req/s under wrk; {total:,} py-spy samples of the gateway process"
                )
                print("| part | share of gateway CPU samples |\n|---|---:|")
                for name, n in buckets.most_common():
                    print(f"| {name} | {n / total:.1%} |")
                print(
                    "top leaf functions: "
                    + "; ".join(f"{f} {n / total:.1%}" for f, n in leaves.most_common(8))
                )
                result[case] = {
                    "requests_per_sec": rps,
                    "samples": total,
                    "buckets": {k: v / total for k, v in buckets.most_common()},
                    "top_leaves": {k: v / total for k, v in leaves.most_common(20)},
                }
        finally:
            gateway.stop()
    (RESULTS / "gateway_profile.json").write_text(json.dumps(result, indent=2))
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description="py-spy breakdown of the gateway under wrk")
    parser.add_argument("--seconds", type=int, default=10)
    asyncio.run(main(parser.parse_args().seconds))


if __name__ == "__main__":
    cli()
