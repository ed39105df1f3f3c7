"""A service, once listening, has its loaded objects frozen out of the garbage collector's sight
and collects its youngest generation rarely (shared.lifecycle.settle_heap)."""

from __future__ import annotations

import re
import subprocess
import sys

from shared.lifecycle import YOUNG_COLLECTION_THRESHOLD

# serve() an app on a free port, and once it is listening say what the collector looks like.
_SERVE = """
import asyncio, gc
from aiohttp import web
from shared.lifecycle import SUPERVISOR_KEY, Supervisor, serve

async def main() -> int:
    print(gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
    app = web.Application()
    supervisor = Supervisor("test")
    app[SUPERVISOR_KEY] = supervisor

    async def report(app: web.Application) -> None:
        async def later() -> None:
            await asyncio.sleep(0.2)  # serve() is past listening
            print(gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
            supervisor.stopping.set()
        supervisor.spawn("report", later())

    app.on_startup.append(report)
    return await serve(app, "127.0.0.1", 0, 1.0, 16)

raise SystemExit(asyncio.run(main()))
"""


def test_a_listening_service_has_frozen_what_it_loaded_and_collects_young_objects_rarely() -> None:
    done = subprocess.run([sys.executable, "-c", _SERVE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # (Log lines go to stdout too: logging is not configured here.)
    counts = [line.split() for line in done.stdout.splitlines() if re.fullmatch(r"\d+ \d+", line)]
    before, after = [(int(frozen), int(young)) for frozen, young in counts]
    assert before == (0, 700)  # Python's defaults, until the service is up
    frozen, young = after
    assert frozen > 10_000  # aiohttp, asyncio, the app: everything loaded
    assert young == YOUNG_COLLECTION_THRESHOLD
