"""What one access line costs: structlog configured as the services configure it (JSON, secrets
redacted), the gateway's `request` line for an accepted fire with its request id bound, written
to /dev/null. Best of 5 × 20,000 lines after 2,000 of warm-up.

The other benchmarks run the services at LOG_LEVEL=warning; at the default (info, with
ACCESS_LOG=all) every answer writes this line as well.

Run: `.venv/bin/python -m bench.log_line`.
"""

from __future__ import annotations

import os
import sys
import time

from shared.logging import REQUEST_ID, configure_logging, get_logger

LINES = 20_000


def main() -> dict[str, float]:
    stderr = sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            configure_logging("webhook-gateway", "info", "json")
            log = get_logger("shared.http")
            REQUEST_ID.set(os.urandom(16).hex())  # as the edge sets it

            def line() -> None:
                log.info(
                    "request",
                    method="POST",
                    path="/api/routine-triggers/public/0123456789abcdef01234567/fire",
                    status=202,
                    duration_ms=1.23,
                )

            for _ in range(2_000):
                line()
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(LINES):
                    line()
                best = min(best, (time.perf_counter() - started) / LINES)
        finally:
            REQUEST_ID.set(None)
            sys.stderr = stderr
    print(f"access line (JSON, redacted, to /dev/null): {best * 1e6:.1f} µs")
    return {"access_line_us": best * 1e6}


if __name__ == "__main__":
    main()
