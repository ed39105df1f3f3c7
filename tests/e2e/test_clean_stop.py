"""The four services as real processes, stopped with SIGTERM with NATS up and during a NATS outage:
exit 0, no error line (the dispatcher logged "exception was never retrieved"), nothing printed at
interpreter exit, every line JSON with a logger; during the outage /readyz says degraded, 200."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from shared.devservers import NatsServer
from tests.support import ServiceProcess, Stack, start_service, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ["api", "webhook-gateway", "scheduler", "run-dispatcher"]


def _check_clean_log(service: ServiceProcess) -> None:
    text = service.logs()
    assert "Traceback" not in text and "Logging error" not in text, text[-3000:]
    for raw in text.splitlines():
        line = json.loads(raw)  # every line is a log record, nothing printed around them
        assert line["level"] != "error", raw
        assert line.get("logger"), raw


@pytest.mark.parametrize("nats_outage", [False, True], ids=["nats-up", "nats-down"])
async def test_sigterm_stops_every_service_cleanly(
    nats_outage: bool, stack: Stack, nats_server: NatsServer, tmp_path: Path
) -> None:
    services = [start_service(name, stack.env(), tmp_path) for name in SERVICES]
    try:
        if nats_outage:
            nats_server.stop()
            async with aiohttp.ClientSession() as http:
                for service in services:

                    async def degraded(url: str = service.url) -> tuple[int, object] | None:
                        async with http.get(url + "/readyz") as resp:
                            body = await resp.json()
                            return (resp.status, body) if body["nats"] == "down" else None

                    status, body = await wait_until(degraded, timeout=30)
                    assert status == 200, service.name
                    assert body == {"status": "degraded", "postgres": "ok", "nats": "down"}
        for service in services:
            assert service.stop() == 0, service.logs()[-3000:]
            _check_clean_log(service)
    finally:
        for service in services:
            service.kill()
