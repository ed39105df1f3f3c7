"""Webhook ingest: signed hmac_sha256 fires per second accepted (202, run committed) by one gateway
process, against a bare aiohttp handler answering 202 on the same machine with the same generator,
and against that handler doing only what a durable acceptance needs (bench/bare_server.py).
Then refusals at saturation, latency against offered load (open loop) and a PNG plot.

Run: `.venv/bin/python -m bench.webhook_ingest` (needs `wrk`: `apt-get install wrk`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    CpuMeter,
    PeakRss,
    add_webhooks,
    clear,
    describe,
    percentile,
    seeded,
    service_env,
)
from bench.loadgen import WrkResult, open_loop, run_wrk, signed_fires, write_requests
from shared.devservers import free_port, wait_for_port
from shared.processes import ServiceProcess

CONNECTIONS = 64
SECONDS = 10
PLOT = Path(__file__).resolve().parents[1] / "docs" / "gateway-latency.png"
GATEWAY_SETTINGS = {
    "rate_limit_trigger_per_sec": 1_000_000,
    "rate_limit_trigger_burst": 1_000_000,
    "rate_limit_client_per_sec": 1_000_000,
    "rate_limit_client_burst": 1_000_000,
    "trigger_cache_ttl_sec": 60,
}


def plot(points: list[dict[str, Any]], max_rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    offered = [p["offered"] for p in points]
    ax.plot(offered, [p["p50_ms"] for p in points], marker="o", label="p50")
    ax.plot(offered, [p["p99_ms"] for p in points], marker="o", label="p99")
    ax.axvline(max_rate, color="grey", linestyle="--", label=f"max (wrk) {max_rate:.0f}/s")
    ax.set_xlabel("offered load (signed fires / s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Webhook gateway: latency against offered load (one process, 2-core host)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT)


def refusal_requests(path: Path, hooks: list[tuple[str, str]], outcome: str, count: int = 50_000) -> Path:
    """Requests that the gateway refuses: unknown publicId (404), a wrong signature (401), or
    valid fires sent to a gateway whose per-trigger limit is 1/s (429)."""
    if outcome == "429":
        write_requests(path, signed_fires(hooks, count, start=5_000_000))
        return path
    if outcome == "401":
        fires = signed_fires(
            [(public_id, "not-the-secret") for public_id, _ in hooks], count, start=6_000_000
        )
        write_requests(path, fires)
        return path
    unknown = [(f"{i:024x}", "s") for i in range(len(hooks))]  # well-formed ids that do not exist
    write_requests(path, signed_fires(unknown, count, start=7_000_000))
    return path


def wrk_with_cpu(url: str, requests: Path, meter: CpuMeter) -> tuple[WrkResult, dict[str, float]]:
    """wrk at saturation, and the CPU microseconds per request of each measured process."""
    before = meter.read()
    result = run_wrk(url, requests, CONNECTIONS, SECONDS)
    after = meter.read()
    per_request = {k: (after[k] - before[k]) * 1e6 / max(result.total, 1) for k in before}
    return result, per_request


def measure_refusals(
    tmp: Path,
    hooks: list[tuple[str, str]],
    urls: dict[str, str],
    meters: dict[str, CpuMeter],
    accepted: WrkResult,
    accepted_cpu_us: float,
) -> dict[str, Any]:
    """Requests/s at saturation for each refusal against accepted fires/s, and the CPU per answer
    (gateway + Postgres + NATS microseconds per request) against an accepted fire's."""
    out: dict[str, Any] = {}
    for outcome in ("404", "401", "429"):
        which = "limited" if outcome == "429" else "gateway"
        requests = refusal_requests(tmp / f"refuse-{outcome}.tsv", hooks, outcome)
        result, cpu = wrk_with_cpu(urls[which], requests, meters[which])
        share = result.statuses.get(int(outcome), 0) / max(result.total, 1)
        cost = accepted.ok_per_sec / result.requests_per_sec
        cpu_us = sum(cpu.values())
        out[outcome] = {
            "requests_per_sec": result.requests_per_sec,
            "share_with_that_status": share,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "cost_vs_accepted": cost,
            "cpu_us_per_request": cpu,
            "cpu_vs_accepted": cpu_us / accepted_cpu_us,
        }
        print(
            f"  {outcome}: {result.requests_per_sec:,.0f} req/s ({share:.1%} answered {outcome}; "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms) → by req/s {cost:.2f} of an accepted "
            f"fire; CPU {cpu_us:.0f} µs/request = {cpu_us / accepted_cpu_us:.2f} of an accepted fire's "
            f"(goal ≤ 0.33: {'met' if max(cost, cpu_us / accepted_cpu_us) <= 1 / 3 else 'MISSED'})",
            flush=True,
        )
    return out


async def main() -> dict[str, Any]:
    async with seeded("ingest", 100) as (s, stack, conn, world):
        await add_webhooks(conn, world, stack.secret_key)
        rss = PeakRss()
        gateway = rss.watch(
            ServiceProcess(
                "webhook-gateway", service_env(stack, **GATEWAY_SETTINGS), s.tmp / "gateway.log"
            ).start()
        )
        limited = ServiceProcess(
            "webhook-gateway",
            service_env(
                stack,
                **{**GATEWAY_SETTINGS, "rate_limit_trigger_per_sec": 1, "rate_limit_trigger_burst": 1},
            ),
            s.tmp / "gateway-limited.log",
        ).start()
        rss.start()
        bare_port, durable_port = free_port(), free_port()
        baselines = [
            subprocess.Popen([sys.executable, "-m", "bench.bare_server", "bare", str(bare_port)]),
            subprocess.Popen(
                [sys.executable, "-m", "bench.bare_server", "durable", str(durable_port)],
                env={**os.environ, **service_env(stack, **GATEWAY_SETTINGS)},
            ),
        ]
        wait_for_port(bare_port)
        wait_for_port(durable_port)
        try:
            requests = s.tmp / "fires.tsv"
            write_requests(requests, signed_fires(world.hooks, 300_000))
            baseline = run_wrk(f"http://127.0.0.1:{bare_port}", requests, CONNECTIONS, SECONDS)
            print(
                f"bare aiohttp 202: {baseline.requests_per_sec:,.0f} req/s (p50 {baseline.p50_ms:.1f} ms, "
                f"p99 {baseline.p99_ms:.1f} ms)",
                flush=True,
            )
            floor = run_wrk(f"http://127.0.0.1:{durable_port}", requests, CONNECTIONS, SECONDS)
            floor_runs = await conn.fetchval("SELECT count(*) FROM routine_runs")
            print(
                f"bare aiohttp + durable acceptance only (the gateway's group commit and publish): "
                f"{floor.ok_per_sec:,.0f} fires/s (p50 {floor.p50_ms:.1f} ms, p99 {floor.p99_ms:.1f} ms; "
                f"runs committed {floor_runs:,}) = {floor.ok_per_sec / baseline.requests_per_sec:.2f} of bare: "
                "the most any gateway that commits each run before answering reaches here",
                flush=True,
            )
            await clear(conn, "routine_runs")
            assert gateway.proc is not None and limited.proc is not None
            assert s.pg._proc is not None and s.nats._proc is not None
            shared_pids = {"postgres": s.pg._proc.pid, "nats": s.nats._proc.pid}
            meters = {
                "gateway": CpuMeter({"gateway": gateway.proc.pid, **shared_pids}),
                "limited": CpuMeter({"gateway": limited.proc.pid, **shared_pids}),
            }
            measured, accepted_cpu = wrk_with_cpu(gateway.url, requests, meters["gateway"])
            runs = await conn.fetchval("SELECT count(*) FROM routine_runs")
            print(
                f"gateway accepted: {measured.ok_per_sec:,.0f} fires/s (non-2xx {measured.non_2xx}, "
                f"p50 {measured.p50_ms:.1f} ms, p99 {measured.p99_ms:.1f} ms); runs committed {runs:,}",
                flush=True,
            )
            ratio = measured.ok_per_sec / baseline.requests_per_sec
            print(
                f"ratio gateway / bare: {ratio:.2f} (goal ≥ 0.5); gateway / durable baseline: "
                f"{measured.ok_per_sec / floor.ok_per_sec:.2f} (what the checks, metrics and middleware cost)",
                flush=True,
            )
            accepted_cpu_us = sum(accepted_cpu.values())
            print(
                f"CPU per accepted fire: {accepted_cpu_us:.0f} µs ("
                + ", ".join(f"{k} {v:.0f}" for k, v in accepted_cpu.items())
                + ")",
                flush=True,
            )
            print("refusals at saturation (same generator):", flush=True)
            urls = {"gateway": gateway.url, "limited": limited.url}
            refusals = measure_refusals(s.tmp, world.hooks, urls, meters, measured, accepted_cpu_us)
            points = []
            offset = 400_000
            for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
                rate = measured.ok_per_sec * fraction
                count = int(rate * 6)
                fires = list(signed_fires(world.hooks, count, start=offset))
                offset += count
                loaded = await open_loop(gateway.url, fires, rate)
                point = {
                    "fraction": fraction,
                    "offered": rate,
                    "achieved": loaded.achieved,
                    "p50_ms": percentile(loaded.latencies, 50) * 1000,
                    "p99_ms": percentile(loaded.latencies, 99) * 1000,
                    "statuses": loaded.statuses,
                }
                points.append(point)
                print(
                    f"  offered {rate:,.0f}/s ({fraction:.0%} of max): {describe(loaded.latencies)}, "
                    f"statuses {loaded.statuses}",
                    flush=True,
                )
            plot(points, measured.ok_per_sec)
            half = next(p for p in points if p["fraction"] == 0.5)
        finally:
            for process in baselines:
                process.terminate()
                process.wait()
            await rss.stop()
            gateway.stop()
            limited.stop()
    result = {
        "baseline_rps": baseline.requests_per_sec,
        "durable_baseline_rps": floor.ok_per_sec,
        "gateway_ok_rps": measured.ok_per_sec,
        "ratio": ratio,
        "wrk_p50_ms": measured.p50_ms,
        "wrk_p99_ms": measured.p99_ms,
        "half_rate_p50_ms": half["p50_ms"],
        "half_rate_p99_ms": half["p99_ms"],
        "refusals": refusals,
        "accepted_cpu_us_per_request": accepted_cpu,
        "points": points,
        "peak_rss_mb": rss.peaks,
        "generator": f"wrk 4.1.0 -t1 -c{CONNECTIONS} -d{SECONDS}s; asyncio open loop",
        "at": time.strftime("%Y-%m-%d %H:%M"),
    }
    (RESULTS / "webhook_ingest.json").write_text(json.dumps(result, indent=2))
    print(f"peak RSS: {rss.peaks}")
    return result


if __name__ == "__main__":
    asyncio.run(main())
