"""`make bench`: every benchmark in turn, each printing its figures against its own baseline,
then the peak RSS of each service over all of them."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from bench import (
    cron_preview,
    dispatch_throughput,
    fire_lag,
    fire_to_issue,
    scheduler_scale,
    top_of_hour,
    webhook_ingest,
)


async def run_all() -> None:
    peaks: dict[str, float] = {}
    benches: list[Any] = [fire_to_issue, fire_lag, top_of_hour, dispatch_throughput]
    if shutil.which("wrk"):
        benches.insert(0, webhook_ingest)
    else:
        print("wrk not found (apt-get install wrk): skipping the webhook ingest benchmark")
    for bench in benches:
        print(f"\n== {bench.__name__.removeprefix('bench.')} ==", flush=True)
        result = await bench.main()
        for name, mb in result.get("peak_rss_mb", {}).items():
            peaks[name] = max(peaks.get(name, 0.0), mb)
    print("\n== scheduler_scale ==", flush=True)
    await scheduler_scale.main()
    print("\n== cron_preview ==", flush=True)
    cron_preview.main()
    print("\n== peak RSS per service over all runs (goal ≤ 100 MB) ==")
    for name, mb in sorted(peaks.items()):
        print(f"  {name:<16} {mb:6.1f} MB")


def main() -> None:
    asyncio.run(run_all())


if __name__ == "__main__":
    main()
