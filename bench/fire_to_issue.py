"""Fire to issue: end-to-end latency at a steady 500 signed fires/s, from the gateway's 202 to the
agent's wake-up (published by the dispatcher after the execution issue is committed).

Run: `.venv/bin/python -m bench.fire_to_issue`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import nats
from nats.aio.msg import Msg

from bench.common import RESULTS, PeakRss, add_webhooks, describe, percentile, seed, servers, service_env
from bench.loadgen import open_loop, signed_fires
from bench.webhook_ingest import GATEWAY_SETTINGS
from shared.processes import ServiceProcess

RATE = 500
SECONDS = 20


async def main() -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    async with servers() as s:
        stack = await s.fresh_stack("fire_to_issue")
        conn = await asyncpg.connect(stack.database_url)
        world = await seed(conn, 200, policy="always_enqueue")
        await add_webhooks(conn, world, stack.secret_key)
        rss = PeakRss()
        env = service_env(stack, **GATEWAY_SETTINGS)
        processes = [
            rss.watch(ServiceProcess(name, env, s.tmp / f"{name}.log").start())
            for name in ("webhook-gateway", "run-dispatcher", "api", "scheduler")
        ]
        gateway = processes[0]
        rss.start()
        accepted: dict[str, float] = {}
        woken: dict[str, float] = {}
        nc = await nats.connect(stack.nats_url)

        async def on_wakeup(msg: Msg) -> None:
            now = time.time()
            for run in json.loads(msg.data)["runIds"]:  # issues created together: one wake-up
                woken[run] = now

        await nc.subscribe("agents.*.wakeup", cb=on_wakeup)
        try:
            fires = list(signed_fires(world.hooks, RATE * SECONDS))
            load = await open_loop(
                gateway.url, fires, RATE, on_accepted=lambda run, at: accepted.__setitem__(run, at)
            )
            deadline = time.monotonic() + 30
            while len(set(accepted) & set(woken)) < len(accepted) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            latencies = [woken[r] - at for r, at in accepted.items() if r in woken]
            issues = await conn.fetchval("SELECT count(*) FROM issues")
        finally:
            await nc.close()
            await rss.stop()
            for process in processes:
                process.stop()
            await conn.close()
    print(
        f"offered {RATE}/s for {SECONDS}s, achieved {load.achieved:.0f}/s; accepted {len(accepted):,}, "
        f"issues {issues:,}, woken {len(latencies):,}",
        flush=True,
    )
    print(f"fire → issue committed (wake-up received): {describe(latencies)}  (goal p99 ≤ 100 ms)")
    print(f"gateway answer latency at {RATE}/s: {describe(load.latencies)}")
    print(f"peak RSS MB: { {k: round(v, 1) for k, v in rss.peaks.items()} }")
    result = {
        "rate": RATE,
        "seconds": SECONDS,
        "accepted": len(accepted),
        "issues": issues,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "answer_p50_ms": percentile(load.latencies, 50) * 1000,
        "answer_p99_ms": percentile(load.latencies, 99) * 1000,
        "peak_rss_mb": rss.peaks,
    }
    (RESULTS / "fire_to_issue.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    asyncio.run(main())
