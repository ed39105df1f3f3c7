"""`make bench`: every benchmark in turn, each printing its figures against its own baseline,
then the peak RSS of each service over all of them.

`python -m bench.run [--soak-minutes 10]` (0 skips the soak).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from typing import Any

from bench import (
    cron_preview,
    decision_cost,
    dispatch_throughput,
    edge_instructions,
    fire_lag,
    fire_to_issue,
    id_order,
    log_line,
    pipeline_ingest,
    profile_gateway,
    run_table_size,
    scheduler_scale,
    soak,
    top_of_hour,
    webhook_ingest,
)


async def run_all(soak_minutes: float) -> None:
    peaks: dict[str, float] = {}
    benches: list[Any] = [
        fire_to_issue,
        fire_lag,
        top_of_hour,
        dispatch_throughput,
        decision_cost,
        run_table_size,
        id_order,
    ]
    if shutil.which("wrk"):
        benches[0:0] = [webhook_ingest, profile_gateway, pipeline_ingest]
    else:
        print("wrk not found (apt-get install wrk): skipping the ingest, profile and pipeline benchmarks")
    for bench in benches:
        print(f"\n== {bench.__name__.removeprefix('bench.')} ==", flush=True)
        result = await bench.main()
        for name, mb in result.get("peak_rss_mb", {}).items():
            peaks[name] = max(peaks.get(name, 0.0), mb)
    print("\n== edge_instructions ==", flush=True)
    await edge_instructions.measure()
    print("\n== log_line ==", flush=True)
    log_line.main()
    print("\n== scheduler_scale ==", flush=True)
    await scheduler_scale.main()
    print("\n== cron_preview ==", flush=True)
    cron_preview.main()
    if soak_minutes > 0:
        print(f"\n== soak ({soak_minutes:g} minutes) ==", flush=True)
        result = await soak.main(soak_minutes, None if shutil.which("wrk") else 300.0)
        for name, mb in result.get("peak_rss_mb", {}).items():
            peaks[name] = max(peaks.get(name, 0.0), mb)
    print("\n== peak RSS per service over all runs (goal ≤ 100 MB) ==")
    for name, mb in sorted(peaks.items()):
        print(f"  {name:<16} {mb:6.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every benchmark")
    parser.add_argument("--soak-minutes", type=float, default=10)
    asyncio.run(run_all(parser.parse_args().soak_minutes))


if __name__ == "__main__":
    main()
