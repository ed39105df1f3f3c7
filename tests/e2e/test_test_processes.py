"""The test harness itself: a service that dies at start is reported at once with its log, and
every service process a test starts is ended however the test ends."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from shared.devservers import free_port
from tests.support import ServiceDied, ServiceProcess, Stack, start_service

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_a_service_that_dies_at_start_is_reported_with_its_log(stack: Stack, tmp_path: Path) -> None:
    # An invalid setting: the process validates its configuration and exits non-zero.
    env = stack.env(secret_key="not-base64-and-too-short")
    with pytest.raises(ServiceDied) as died:
        start_service("webhook-gateway", env, tmp_path)
    message = str(died.value)
    assert "webhook-gateway exited with code" in message
    assert "SECRET_KEY" in message.upper()  # the child's own explanation, from its log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not alive either.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_processes_of_a_test_are_ended_however_it_ends(stack: Stack, tmp_path: Path) -> None:
    """An inner pytest session: its first test starts a service and fails, its second starts one
    and is interrupted (Ctrl-C). The first's process is gone before the second begins (the
    registry fixture ended it); the second's is gone once the session is over."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(
        textwrap.dedent(
            f"""
            import os
            from pathlib import Path
            from tests.support import Stack, start_service

            STACK = Stack({stack.database_url!r}, {stack.nats_url!r})
            OUT = Path({str(tmp_path)!r})

            def test_fails(tmp_path):
                process = start_service("scheduler", STACK.env(), tmp_path)
                (OUT / "first").write_text(str(process.proc.pid))
                assert False, "inner failure"

            def test_interrupted(tmp_path):
                first = int((OUT / "first").read_text())
                state = Path(f"/proc/{{first}}/stat")
                gone = not state.exists() or state.read_text().split(")")[-1].split()[0] == "Z"
                (OUT / "first-gone").write_text(str(gone))
                process = start_service("scheduler", STACK.env(), tmp_path)
                (OUT / "second").write_text(str(process.proc.pid))
                raise KeyboardInterrupt
            """
        )
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"),
            # Its own temporary root: under the shared one it would reset its mode to 0700 and
            # lock the Postgres user out of the outer session's data directories.
            f"--basetemp={tmp_path / 'inner-tmp'}",
            *("-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)),
            *("-p", "tests.conftest", str(inner)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert "KeyboardInterrupt" in result.stdout
    pids = [int((tmp_path / name).read_text()) for name in ("first", "second")]
    deadline = time.monotonic() + 10
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in pids if _alive(pid)]
    for pid in survivors:
        os.kill(pid, 9)
    assert survivors == [], result.stdout[-2000:]
    assert (tmp_path / "first-gone").read_text() == "True", "the failed test's process outlived it"


def test_start_is_a_noop_for_the_registry_when_restarted(stack: Stack, tmp_path: Path) -> None:
    from tests.support import RUNNING

    process = ServiceProcess("scheduler", stack.env(), tmp_path / "s.log")
    process.start()
    process.kill()
    process.start()  # restarted in place (as the resilience fleet does): registered once
    assert [p for p in RUNNING if p is process] == [process]


def test_free_port_does_not_hand_out_a_port_twice() -> None:
    """The kernel hands the same free port out again soon after (2,708 distinct of 3,000 here):
    two services of one fleet were given one port, and the second was reached at the first."""
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers 200 to everything: what a test would reach if it took another listener for its
    service (a fleet's API once answered "no route for POST /api/companies": a gateway's 404)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ready"}')

    def log_message(self, *_args: object) -> None:
        pass


def test_a_service_whose_port_is_taken_listens_on_another_and_is_reached_there(
    stack: Stack, tmp_path: Path
) -> None:
    impostor = http.server.HTTPServer(("127.0.0.1", 0), _Impostor)
    taken = impostor.server_address[1]
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        process = ServiceProcess("scheduler", stack.env(), tmp_path / "s.log", port=taken)
        process.start()
        assert process.port != taken, "the harness took another listener for the service"
        assert process.exit_code is None
        with urllib.request.urlopen(process.url + "/readyz", timeout=5) as resp:
            assert json.loads(resp.read())["postgres"] == "ok"  # the service itself answers
        # The attempt that could not listen leaves no error in the log (tests read logs for them).
        assert [e for e in process.log_lines() if e.get("level") == "error"] == []
    finally:
        impostor.shutdown()
        impostor.server_close()
