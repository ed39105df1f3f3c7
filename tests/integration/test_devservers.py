"""The local Postgres and NATS servers never pass off a foreign server on their port as their own,
and the suite's Postgres keeps running when another pytest session starts on the machine."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from shared.devservers import NatsServer, PostgresServer, _nats_server_name, _pg_bin
from tests.databases import execute_on_server


def _data_directory(dsn: str) -> str:
    result = subprocess.run(
        [_pg_bin("psql"), "-X", "-A", "-t", "-c", "SHOW data_directory", dsn],
        check=True,
        capture_output=True,
    )
    return result.stdout.decode().strip()


def test_postgres_on_a_port_another_postgres_holds_moves_to_its_own_port(
    postgres_server: PostgresServer, server_tmp: Path
) -> None:
    """The defect: our Postgres failed to bind while pg_isready answered from the other one, so
    migrations and tokens went into a foreign database."""
    ours = PostgresServer(server_tmp / "pg", port=postgres_server.port, fast=True)
    ours.start()
    try:
        assert ours.port != postgres_server.port
        assert Path(_data_directory(ours.dsn)).resolve() == (server_tmp / "pg").resolve()
    finally:
        ours.stop()


def test_nats_on_a_port_another_nats_holds_moves_to_its_own_port(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    ours = NatsServer(tmp_path / "nats", port=nats_server.port)
    ours.start()
    try:
        assert ours.port != nats_server.port
        assert _nats_server_name(ours.port) == ours.server_name
    finally:
        ours.stop()


def test_the_session_postgres_survives_another_pytest_session_starting(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every pytest session that starts makes the root of pytest's temporary directories private
    (0700). The defect: the suite's Postgres, which runs as an unprivileged user, kept its data
    there; a second pytest run on the machine cut it off, and it panicked at its next checkpoint
    (it opens pg_control by its full path) in the middle of the suite. Done here as pytest does it."""
    root = tmp_path_factory.getbasetemp().parent
    mode = root.stat().st_mode
    root.chmod(mode & ~0o077)
    try:
        asyncio.run(execute_on_server(postgres_server, "CHECKPOINT"))
        assert postgres_server.running
    finally:
        root.chmod(mode)
