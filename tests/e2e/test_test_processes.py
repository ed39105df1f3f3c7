"""The test harness itself: a service that dies at start is reported at once with its log, and
every service process a test starts is ended however the test ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("ending", ["failure", "keyboard-interrupt"])
def test_processes_of_a_test_are_ended_however_it_ends(stack: Stack, tmp_path: Path, ending: str) -> None:
    """An inner pytest session starts a service and then fails or is interrupted; afterwards the
    service process is gone (the registry fixture, or at worst interpreter exit, ended it)."""
    pid_file = tmp_path / "pid"
    inner = tmp_path / "test_inner.py"
    inner.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from tests.support import Stack, start_service

            def test_inner(tmp_path):
                stack = Stack({stack.database_url!r}, {stack.nats_url!r})
                process = start_service("scheduler", stack.env(), tmp_path)
                assert process.proc is not None
                Path({str(pid_file)!r}).write_text(str(process.proc.pid))
                {"raise KeyboardInterrupt" if ending == "keyboard-interrupt" else "assert False, 'inner failure'"}
            """
        )
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"),
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
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, 9)
        pytest.fail(f"service process {pid} outlived its test ({ending}):\n{result.stdout[-2000:]}")


def test_start_is_a_noop_for_the_registry_when_restarted(stack: Stack, tmp_path: Path) -> None:
    from tests.support import RUNNING

    process = ServiceProcess("scheduler", stack.env(), tmp_path / "s.log")
    process.start()
    process.kill()
    process.start()  # restarted in place (as the resilience fleet does): registered once
    assert [p for p in RUNNING if p is process] == [process]
