"""The `routines` command: a version, and one clear line with a non-zero exit on connection or
configuration errors (never a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.devservers import PostgresServer, free_port


def routines(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_is_printed() -> None:
    result = routines("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "routines 0.1.0"


@pytest.mark.parametrize("command", ["migrate", "bootstrap"])
def test_unreachable_database_is_one_line_and_exit_1(command: str) -> None:
    dsn = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/routines"
    result = routines(command, ROUTINES_DATABASE_URL=dsn)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("routines: cannot reach the database at 127.0.0.1:")
    assert "ROUTINES_DATABASE_URL" in lines[0]
    assert "hunter2" not in result.stderr
    assert result.stdout == ""


def test_unknown_host_is_one_line() -> None:
    result = routines("migrate", ROUTINES_DATABASE_URL="postgresql://postgres@nosuchhost.invalid:5432/x")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nosuchhost.invalid:5432/x" in result.stderr


def test_missing_database_on_a_live_server_is_one_line(postgres_server: PostgresServer) -> None:
    result = routines("migrate", ROUTINES_DATABASE_URL=postgres_server.dsn_for("no_such_database"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert 'database "no_such_database" does not exist' in result.stderr


@pytest.mark.parametrize(
    "command", ["migrate", "bootstrap", "api", "scheduler", "webhook-gateway", "run-dispatcher"]
)
def test_missing_configuration_is_one_line_and_exit_2(command: str) -> None:
    result = routines(command)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("routines: invalid configuration: ROUTINES_DATABASE_URL")


def test_service_on_a_taken_port_says_so_in_one_line(database_url: str) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = routines(
            "scheduler",
            ROUTINES_DATABASE_URL=database_url,
            ROUTINES_NATS_URL=f"nats://127.0.0.1:{free_port()}",
            ROUTINES_HTTP_HOST="127.0.0.1",
            ROUTINES_HTTP_PORT=str(port),
            ROUTINES_LOG_FORMAT="json",
        )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert '"event": "cannot listen"' in result.stderr
