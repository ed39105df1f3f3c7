"""Soak: the whole pipeline for N minutes at half of its measured maximum — signed webhook fires
and manual runs (open loop), plus 10,000 schedule triggers on `* * * * *` (10,000 runs at the top of
every minute). Reports the RSS of each service at the start and the end, p99 per minute, errors,
and plots RSS and p99 over time (docs/soak.png).

Run: `.venv/bin/python -m bench.soak [--minutes 10] [--rate R]` (needs `wrk` for the maximum when
no --rate is given: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import RESULTS, World, add_webhooks, percentile, seed, servers, service_env
from bench.loadgen import RawHttp, run_wrk, signed_fires, webhook_request, write_requests
from bench.webhook_ingest import GATEWAY_SETTINGS
from shared.bootstrap import create_instance_admin_token
from shared.metrics import UNDECIDED_RUNS
from shared.processes import ServiceProcess

PLOT = Path(__file__).resolve().parents[1] / "docs" / "soak.png"
SERVICES = ("webhook-gateway", "run-dispatcher", "scheduler", "api")
SCHEDULES = 10_000
HOOKS = 100
MANUAL_SHARE = 10  # one request in ten is a manual run through the API


class Tally:
    """Latencies and errors per minute of the soak, per kind of request."""

    def __init__(self) -> None:
        self.latencies: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.errors: dict[tuple[int, str], int] = defaultdict(int)
        self.statuses: dict[int, int] = defaultdict(int)

    def saw(self, minute: int, kind: str, status: int, latency: float) -> None:
        self.statuses[status] += 1
        if status in (200, 202):
            self.latencies[(minute, kind)].append(latency)
        else:
            self.errors[(minute, kind)] += 1


async def _seed_schedules(conn: asyncpg.Connection, world: World) -> None:
    """10,000 routines (half coalesce, half always_enqueue), one `* * * * *` trigger each."""
    policies = ["coalesce_if_active", "always_enqueue"]
    for policy in policies:
        ids = await conn.fetch(
            "INSERT INTO routines (company_id, title, assignee_agent_id, project_id, concurrency_policy)"
            " SELECT $1, 'cron ' || g, $2, $3, $4 FROM generate_series(1, $5) g RETURNING id",
            world.company_id,
            world.agent_id,
            world.project_id,
            policy,
            SCHEDULES // len(policies),
        )
        await conn.execute(
            "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
            " SELECT r, $2, 'schedule', '* * * * *', 'UTC', date_trunc('minute', now()) + interval '1 minute'"
            " FROM unnest($1::uuid[]) r",
            [r["id"] for r in ids],
            world.company_id,
        )


class RssLog:
    def __init__(self, processes: list[ServiceProcess]) -> None:
        self.processes = processes
        self.points: list[tuple[float, str, float]] = []

    def sample(self, t: float) -> None:
        for p in self.processes:
            if p.proc is not None and p.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    self.points.append((t, p.name, psutil.Process(p.proc.pid).memory_info().rss / 2**20))

    def first_last(self, name: str) -> tuple[float, float, float]:
        """RSS (MB) at the start (the first twentieth's median), once warm (the first sample two
        minutes in, when the connection pools, caches and buffers are at their working size) and
        at the end (the last twentieth's median). Growth is judged from warm to end."""
        points = [(t, mb) for t, n, mb in self.points if n == name]
        mine = [mb for _, mb in points]
        head, tail = mine[: max(1, len(mine) // 20)], mine[-max(1, len(mine) // 20) :]
        warm = next((mb for t, mb in points if t >= 120), mine[-1])
        return sorted(head)[len(head) // 2], warm, sorted(tail)[len(tail) // 2]


async def soak(
    gateway: ServiceProcess,
    api: ServiceProcess,
    admin: str,
    world: World,
    rate: float,
    minutes: float,
    rss: RssLog,
) -> Tally:
    tally = Tally()
    started = time.perf_counter()
    total = int(rate * minutes * 60)
    fires = signed_fires(world.hooks, total)
    tasks: set[asyncio.Task[None]] = set()
    gateway_http = RawHttp("127.0.0.1", gateway.port)
    api_http = RawHttp("127.0.0.1", api.port)
    try:

        async def send(http: RawHttp, kind: str, raw: bytes, scheduled: float) -> None:
            minute = int((scheduled - started) // 60)
            try:
                async with asyncio.timeout(30):  # as a sender's HTTP client would give up
                    status, _ = await http.request(raw)
            except (OSError, TimeoutError):
                status = 0
            tally.saw(minute, kind, status, time.perf_counter() - scheduled)

        def manual_request(routine: Any, n: int) -> bytes:
            body = b'{"payload":{"n":%d}}' % n
            return (
                f"POST /api/routines/{routine}/run HTTP/1.1\r\nHost: api\r\n"
                f"Authorization: Bearer {admin}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        next_rss = 0.0
        for n in range(total):
            scheduled = started + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter() - started
            if now >= next_rss:
                rss.sample(now)
                next_rss = now + 5
            if n % MANUAL_SHARE == MANUAL_SHARE - 1:
                routine = world.routines[n % len(world.routines)]
                coro = send(api_http, "manual", manual_request(routine, n), scheduled)
                next(fires)  # keep the webhook sequence aligned
            else:
                coro = send(gateway_http, "webhook", webhook_request("gateway", next(fires)), scheduled)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        rss.sample(time.perf_counter() - started)
    finally:
        gateway_http.close()
        api_http.close()
    return tally


def _complaints(processes: list[ServiceProcess]) -> Counter[tuple[str, str, str, Any, str]]:
    """What the services logged at warning or above, and every answer ≥ 500, counted by kind."""
    seen: Counter[tuple[str, str, str, Any, str]] = Counter()
    for p in processes:
        for line in p.log_lines():
            level, status = line.get("level", ""), line.get("status")
            if level in ("warning", "error", "critical") or (isinstance(status, int) and status >= 500):
                seen[(p.name, level, line.get("event", ""), status, str(line.get("error", ""))[:120])] += 1
    return seen


def plot(rss: RssLog, per_minute: list[dict[str, Any]], rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), dpi=110, sharex=True)
    for name in SERVICES:
        points = [(t / 60, mb) for t, n, mb in rss.points if n == name]
        top.plot([p[0] for p in points], [p[1] for p in points], label=name)
    top.set_ylabel("RSS (MB)")
    top.set_ylim(bottom=0)
    top.set_title(f"Soak: {rate:,.0f} requests/s (webhooks + manual runs) + 10,000 cron triggers/min")
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=8)
    for kind in ("webhook", "manual"):
        bottom.plot(
            [m["minute"] + 0.5 for m in per_minute],
            [m[f"{kind}_p99_ms"] for m in per_minute],
            marker="o",
            label=f"{kind} p99",
        )
    bottom.set_xlabel("minute")
    bottom.set_ylabel("latency p99 (ms)")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT)


async def _drained(conn: asyncpg.Connection) -> float:
    """Wait until no run is left undecided; the seconds that took. Asked every half second: the
    count looks up each run its batches name."""
    started = time.perf_counter()
    while await conn.fetchval(UNDECIDED_RUNS):
        await asyncio.sleep(0.5)
    return time.perf_counter() - started


async def main(minutes: float = 10, rate: float | None = None, fraction: float = 0.5) -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    async with servers() as s:
        stack = await s.fresh_stack("soak")
        conn = await asyncpg.connect(stack.database_url)
        world = await seed(conn, HOOKS, "coalesce_if_active")
        await conn.execute(
            "UPDATE routines SET concurrency_policy = 'always_enqueue' WHERE id = ANY($1::uuid[])",
            world.routines[::2],
        )
        await add_webhooks(conn, world, stack.secret_key)
        await _seed_schedules(conn, world)
        await conn.execute("ANALYZE")
        admin = await create_instance_admin_token(stack.database_url, "soak")
        env = service_env(stack, **GATEWAY_SETTINGS)
        processes = [ServiceProcess(name, env, s.tmp / f"{name}.log").start() for name in SERVICES]
        gateway, api = processes[0], processes[3]
        rss = RssLog(processes)
        try:
            if rate is None:
                requests = s.tmp / "max.tsv"
                write_requests(requests, signed_fires(world.hooks, 100_000, start=10_000_000))
                measured = await asyncio.to_thread(run_wrk, gateway.url, requests, 32, 6)
                rate = measured.per_sec(202) * fraction
                print(
                    f"measured maximum {measured.per_sec(202):,.0f} fires/s → soak at {rate:,.0f}/s",
                    flush=True,
                )
                await _drained(conn)
            runs_before = int(await conn.fetchval("SELECT count(*) FROM routine_runs"))
            tally = await soak(gateway, api, admin, world, rate, minutes, rss)
            drain = await _drained(conn)
            schedule_runs = int(
                await conn.fetchval("SELECT count(*) FROM routine_runs WHERE source = 'schedule'")
            )
            runs = int(await conn.fetchval("SELECT count(*) FROM routine_runs")) - runs_before
            failed = int(await conn.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'failed'"))
            alive = {p.name: p.proc is not None and p.proc.poll() is None for p in processes}
            complaints = _complaints(processes)
        finally:
            for p in processes:
                p.stop()
            await conn.close()
    per_minute = []
    for minute in range(int(minutes + 0.999)):
        row: dict[str, Any] = {"minute": minute}
        for kind in ("webhook", "manual"):
            values = tally.latencies.get((minute, kind), [])
            row[f"{kind}_n"] = len(values)
            row[f"{kind}_p50_ms"] = percentile(values, 50) * 1000
            row[f"{kind}_p99_ms"] = percentile(values, 99) * 1000
            row[f"{kind}_errors"] = tally.errors.get((minute, kind), 0)
        per_minute.append(row)
    errors = sum(tally.errors.values())
    print(f"soak {minutes} min at {rate:,.0f}/s: statuses {dict(tally.statuses)}, errors {errors} (goal 0)")
    print(
        f"runs recorded {runs:,} (schedule {schedule_runs:,}, failed {failed}); backlog drained {drain:.1f} s after"
    )
    print("| minute | webhooks | p50 | p99 | manual runs | p50 | p99 | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in per_minute:
        print(
            f"| {m['minute']} | {m['webhook_n']:,} | {m['webhook_p50_ms']:.1f} ms | {m['webhook_p99_ms']:.1f} ms "
            f"| {m['manual_n']:,} | {m['manual_p50_ms']:.1f} ms | {m['manual_p99_ms']:.1f} ms "
            f"| {m['webhook_errors'] + m['manual_errors']} |"
        )
    memory = {}
    print("| service | RSS at start | after 2 min | at end | peak |")
    print("|---|---:|---:|---:|---:|")
    for name in SERVICES:
        first, warm, last = rss.first_last(name)
        peak = max(mb for _, n, mb in rss.points if n == name)
        memory[name] = {"start_mb": first, "warm_mb": warm, "end_mb": last, "peak_mb": peak}
        print(f"| {name} | {first:.1f} MB | {warm:.1f} MB | {last:.1f} MB | {peak:.1f} MB |")
    print(f"services alive at the end: {alive}")
    for (service, level, event, status, error), n in complaints.most_common(10):
        print(f"{service} logged {n:,} × {level} {event!r} status={status} {error}")
    plot(rss, per_minute, rate)
    result = {
        "minutes": minutes,
        "rate": rate,
        "statuses": dict(tally.statuses),
        "errors": errors,
        "runs": runs,
        "schedule_runs": schedule_runs,
        "failed_runs": failed,
        "drain_sec": drain,
        "per_minute": per_minute,
        "memory": memory,
        "peak_rss_mb": {name: m["peak_mb"] for name, m in memory.items()},
        "rss_points": rss.points,
        "at": time.strftime("%Y-%m-%d %H:%M"),
    }
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2))
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description="Soak the whole pipeline at half its maximum.")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the measured max (default 0.5)")
    parser.add_argument(
        "--rate", type=float, default=None, help="requests/s (default: half the measured max)"
    )
    args = parser.parse_args()
    import uvloop  # the services' loop; the load generator's CPU is taken from them

    uvloop.run(main(args.minutes, args.rate, args.fraction))


if __name__ == "__main__":
    cli()
