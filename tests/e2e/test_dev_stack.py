"""`routines dev` (what `make run` starts): four ready services and a stack.env for scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_dev_stack_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    env["ROUTINES_DEV_DIR"] = str(tmp_path / "dev")
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "dev"], env=env, stdout=log, stderr=log)
    stack_env = tmp_path / "dev" / "stack.env"
    try:
        deadline = time.monotonic() + 90
        while not stack_env.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert stack_env.exists(), (tmp_path / "dev.log").read_text()
        values = dict(line.split("=", 1) for line in stack_env.read_text().splitlines())
        assert set(values) == {
            "ROUTINES_API_URL",
            "ROUTINES_GATEWAY_URL",
            "ROUTINES_ADMIN_TOKEN",
            "ROUTINES_DATABASE_URL",
            "ROUTINES_NATS_URL",
        }
        assert values["ROUTINES_ADMIN_TOKEN"].startswith("rta_")
        output = (tmp_path / "dev.log").read_text()
        for name in ("api", "webhook-gateway", "scheduler", "run-dispatcher"):
            url = next(line.split()[-1] for line in output.splitlines() if f"  {name} " in line)
            with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
