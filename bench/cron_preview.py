"""Preview of 100 fires for worst-case expressions, against an easy one in the same run.

Pure function timing (the handler adds JSON only): median of REPEATS calls of
`shared.cron.preview(expr, zone, after, 100)`, each from a cold parse cache.

Run: `.venv/bin/python -m bench.cron_preview`.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import RESULTS
from shared.cron import describe, parse_cron, preview

REPEATS = 7
AFTER = datetime(2026, 11, 28, tzinfo=UTC)
BASELINE = ("0 9 * * *", "UTC", "easy: daily at 09:00")
WORST = [
    ("0 0 29 2 *", "UTC", "Feb 29 (every fourth year; 2100 skipped)"),
    ("0 0 29 2 */2", "UTC", "Feb 29 on Sun/Tue/Thu/Sat (AND rule: up to 16 years apart)"),
    ("0 0 31 * *", "Europe/Amsterdam", "day 31 (skips 30-day months and February)"),
    ("0 0 31 2,4,6,9,11,12 *", "UTC", "day 31 in mostly 30-day months (December only)"),
    ("0 12 13 * FRI", "America/New_York", "dom-or-dow: the 13th or a Friday"),
    ("0 0 1-7 * 1", "Europe/London", "dom-or-dow: first week or Mondays"),
    ("30 2 * * *", "Europe/Amsterdam", "fixed time in the spring-forward gap"),
    ("15 2 * 3,4,9,10 0", "Australia/Lord_Howe", "sparse minutes on Sundays, 30-minute DST"),
    ("45 2 * 9,4 0", "Pacific/Chatham", "sparse minutes, Chatham DST"),
    ("59 23 31 12 *", "America/Santiago", "once a year, last minute"),
]


def _time_preview(expr: str, zone: str) -> float:
    samples = []
    for _ in range(REPEATS):
        parse_cron.cache_clear()
        describe.cache_clear()
        started = time.perf_counter()
        preview(expr, zone, AFTER, 100)
        describe(expr, zone)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    for expr, zone, _ in [BASELINE, *WORST]:  # warm up: imports, zone files, the describer's locale
        preview(expr, zone, AFTER, 1)
        describe(expr, zone)
    base = _time_preview(BASELINE[0], BASELINE[1])
    rows: list[dict[str, Any]] = []
    worst = 0.0
    print("| expression | zone | case | 100 fires (ms) | × easy | last fire |")
    print("|---|---|---|---:|---:|---|")
    print(f"| `{BASELINE[0]}` | {BASELINE[1]} | {BASELINE[2]} | {base * 1000:.2f} | 1.0 | |")
    for expr, zone, case in WORST:
        seconds = _time_preview(expr, zone)
        last = preview(expr, zone, AFTER, 100)[-1]["utc"]
        rows.append({"expression": expr, "zone": zone, "case": case, "ms": seconds * 1000, "last": last})
        worst = max(worst, seconds * 1000)
        print(f"| `{expr}` | {zone} | {case} | {seconds * 1000:.2f} | {seconds / base:.1f} | {last} |")
    print(f"worst case {worst:.2f} ms per 100-fire preview (goal ≤ 20 ms)")
    result = {"baseline_ms": base * 1000, "rows": rows}
    (RESULTS / "cron_preview.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
