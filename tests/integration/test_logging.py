"""Log output: NATS outages do not flood, access lines follow ROUTINES_ACCESS_LOG, every line names
its logger, and clean stops (also during a NATS outage) log no error and print nothing at exit."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.bus import Bus
from shared.devservers import NatsServer
from shared.errors import RateLimited
from shared.http import REFUSAL_LINES_KEY, RefusalLines, create_base_app, finish_routes, json_response
from shared.settings import CommonSettings
from tests.support import Stack, served, wait_until


async def test_nats_outage_warnings_come_at_most_once_per_interval_with_a_count(
    nats_server: NatsServer,
) -> None:
    bus = Bus(nats_server.url, "test", warn_interval=1.0)
    await bus.connect_forever()
    with structlog.testing.capture_logs() as logs:
        nats_server.stop()

        async def repeated_warning() -> list[Any]:
            return [e for e in logs if e["event"] == "nats still unreachable"][1:]

        # nats-py retries every 0.5 s: two summaries mean several intervals of failed attempts.
        await wait_until(repeated_warning, timeout=20)
        warnings = [e for e in logs if e["log_level"] == "warning"]
    await bus.close()
    summaries = [e for e in warnings if e["event"] == "nats still unreachable"]
    assert warnings[0]["event"] == "nats connection lost; reconnecting in the background"
    assert len(warnings) == 1 + len(summaries)
    assert all(e["failed_attempts"] >= 1 for e in summaries)
    assert sum(e["failed_attempts"] for e in summaries) > len(summaries), "attempts were not summed up"
    assert all(e["down_sec"] > 0 for e in summaries)


async def test_close_during_a_nats_outage_is_quiet(nats_server: NatsServer) -> None:
    bus = Bus(nats_server.url, "test", warn_interval=60)
    await bus.connect_forever()
    nats_server.stop()
    await wait_until(lambda: _false_when(bus.is_connected), timeout=10)
    with structlog.testing.capture_logs() as logs:
        await bus.close()
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []


async def _false_when(value: bool) -> bool:
    return not value


async def _ok(_request: web.Request) -> web.Response:
    return json_response({"ok": True})


@pytest.fixture
def access_app(stack: Stack) -> Any:
    def make(mode: str) -> web.Application:
        settings = CommonSettings(database_url=stack.database_url, nats_url=stack.nats_url, access_log=mode)
        app = create_base_app("test", settings)
        app.router.add_get("/ok", _ok)
        finish_routes(app)
        return app

    return make


@pytest.mark.parametrize(("mode", "logged_statuses"), [("all", [200, 404]), ("errors", [404]), ("off", [])])
async def test_access_log_mode(access_app: Any, mode: str, logged_statuses: list[int]) -> None:
    async with TestClient(served(access_app(mode))) as client:
        with structlog.testing.capture_logs() as logs:
            assert (await client.get("/ok")).status == 200
            assert (await client.get("/missing")).status == 404
    assert [e["status"] for e in logs if e["event"] == "request"] == logged_statuses


async def _limited(_request: web.Request) -> web.Response:
    raise RateLimited(1, "too many requests")


async def test_a_flood_of_429s_is_summarised_in_the_access_log(stack: Stack) -> None:
    """Sixty 429s in a burst: about ten access lines (ten a second per route), and the next line
    after a pause says how many were left out; every 404 of the same burst keeps its line, and the
    metrics count all 429s."""
    settings = CommonSettings(database_url=stack.database_url, nats_url=stack.nats_url, access_log="all")
    app = create_base_app("test", settings)
    # The burst takes no time on the lines' clock, however slow the machine running it.
    now = [1000.0]
    app[REFUSAL_LINES_KEY] = RefusalLines(clock=lambda: now[0])
    app.router.add_get("/limited", _limited)
    finish_routes(app)
    async with TestClient(served(app)) as client:
        with structlog.testing.capture_logs() as logs:
            for _ in range(60):
                assert (await client.get("/limited")).status == 429
                assert (await client.get("/missing")).status == 404
            now[0] += 0.3  # three lines' worth of pause
            assert (await client.get("/limited")).status == 429
        metrics = await (await client.get("/metrics")).text()
    refused = [e for e in logs if e["event"] == "request" and e["status"] == 429]
    assert len([e for e in logs if e["event"] == "request" and e["status"] == 404]) == 60
    assert len(refused) == 11  # ten a second, starting with ten in hand; the one after the pause
    assert [e.get("suppressed", 0) for e in refused] == [0] * 10 + [50]
    assert 'route="/limited",status="429"} 61.0' in metrics


LATE_LOGGER = """
import asyncio, logging, sys
from shared.logging import configure_logging

configure_logging("test", "info", "json")


class LogsWhenFinalized:
    def __del__(self) -> None:
        logging.getLogger("late").warning("finalized %s", "late")


late = LogsWhenFinalized()  # a module global: finalized while the interpreter shuts down


async def main() -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(100))  # destroyed pending, at exit


asyncio.new_event_loop().run_until_complete(main())
"""


def test_nothing_is_printed_at_interpreter_exit(tmp_path: Any) -> None:
    """Records logged by finalizers at shutdown printed "--- Logging error --- ImportError:
    sys.meta_path is None"; now they are dropped quietly."""
    import subprocess
    import sys

    script = tmp_path / "late.py"
    script.write_text(LATE_LOGGER)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""
