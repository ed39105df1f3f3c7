"""What each part of an accepted fire costs the gateway, in instructions: the accepted-fire row of
bench/edge_instructions.py (callgrind, 20 connections at a time, real Postgres and NATS), run
once as the service runs and once with each part replaced by nothing (`--parts`). The difference
is that part's cost per fire; what no part accounts for is aiohttp's own work (the bare handler's
row) and the handler's plumbing. An experiment, not a configuration: a fire without its HMAC
check or its INSERT is not a fire.

Run: `.venv/bin/python -m bench.edge_ablation` (needs valgrind; about 40 s per part).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench import edge_instructions as edge

PARTS = {
    "hmac": "signature check (verify)",
    "json": "body as JSON (content type, parse, storable check)",
    "edge": "the edge (request id, metrics, access-line decision): fast_edge, and edge_middleware",
    "limits": "rate limits (four token-bucket calls)",
    "metrics": "the handler's own metrics",
    "fastpath": "the fast path: aiohttp's request handling serves every fire instead (negative: its saving)",
    "insert": "the group-commit INSERT (asyncpg encoding, round trip, result)",
    "announce": "announcing each commit on NATS",
}
ACCEPTED_ROW = 3  # the fourth row of bench/edge_instructions.py


def _remove(parts: set[str]) -> None:
    """Replace each named part by nothing, in this (measured) process, before the app is built."""
    from aiohttp import web

    import routines_gateway.app as gateway_app
    import routines_gateway.fire as fire
    import routines_gateway.ingest as ingest
    import shared.http as http
    from routines_gateway.ratelimit import TokenBuckets
    from routines_gateway.signing import Verified

    @web.middleware
    async def passthrough(request: web.Request, handler: Callable[..., Any]) -> Any:
        return await handler(request)

    def no_edge(_app: Any, _route: str, handle: Any) -> Any:
        return handle

    def announce_on(_bus: Any) -> Any:
        async def announce(_runs: Any) -> None:
            return None

        return announce

    async def insert(_self: Any, batch: Sequence[Any]) -> set[Any]:
        await asyncio.sleep(0)
        return {p.id for p in batch}

    class Nothing:
        def inc(self, *_args: Any) -> None:
            return None

        def observe(self, *_args: Any) -> None:
            return None

    replacements: dict[str, list[tuple[Any, str, Any]]] = {
        "hmac": [(fire, "verify", lambda _m, headers, *_r: Verified(None, headers["X-Paperclip-Signature"]))],
        "json": [(fire, "_payload", lambda *_args: {})],
        "edge": [(http, "edge_middleware", passthrough), (gateway_app, "fast_edge", no_edge)],
        "fastpath": [(edge, "with_fast_route", lambda _app, server: server)],
        "announce": [(gateway_app, "announce_on", announce_on)],
        "insert": [(ingest.GroupCommitter, "_insert", insert)],
        "metrics": [
            (fire, "OUTCOMES", Nothing()),
            (fire, "VERIFY_SECONDS", Nothing()),
            (ingest, "BATCH_SIZE", Nothing()),
        ],
        "limits": [(TokenBuckets, "take", lambda *_args: 0), (TokenBuckets, "peek", lambda *_args: 0)],
    }
    for part in parts:
        for owner, name, value in replacements[part]:
            setattr(owner, name, value)


def _accepted_row(env: dict[str, str], removed: str) -> tuple[float, str]:
    """Instructions per accepted fire with `removed` (comma-separated parts) replaced by nothing."""
    totals, statuses = edge.callgrind_rows({**env, "BENCH_REMOVE": removed}, "bench.edge_ablation")
    return totals[ACCEPTED_ROW], statuses[ACCEPTED_ROW]


async def measure(parts: Sequence[str]) -> dict[str, float]:
    async with edge._stack() as env:
        whole, status = await asyncio.to_thread(_accepted_row, env, "")
        assert status == "202", status
        print(
            f"instructions per accepted fire (callgrind, {edge.REQUESTS} after {edge.REQUESTS} of warm-up):"
        )
        print(f"  as the service runs: {whole:,.0f}")
        costs = {}
        for part in parts:
            without, status = await asyncio.to_thread(_accepted_row, env, part)
            assert status == "202", (part, status)
            costs[part] = whole - without
            print(f"  {PARTS[part]:<84} {costs[part]:>8,.0f}  ({costs[part] / whole:.1%})")
        rest = whole - sum(cost for part, cost in costs.items() if part != "fastpath")  # not a part of it
        print(
            f"  {'everything else (HTTP, routing, cache hit, the answer)':<84} {rest:>8,.0f}  ({rest / whole:.1%})"
        )
        return {"whole": whole, **costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parts = [p for p in parser.parse_args().parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    asyncio.run(measure(parts))


if __name__ == "__main__":
    if "--drive" in sys.argv:
        import uvloop

        _remove({p for p in os.environ.get("BENCH_REMOVE", "").split(",") if p})
        uvloop.run(edge._drive())
    else:
        main()
