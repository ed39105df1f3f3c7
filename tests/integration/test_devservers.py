"""The local Postgres and NATS servers never pass off a foreign server on their port as their own."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shared.devservers import NatsServer, PostgresServer, _nats_server_name, _pg_bin


def _data_directory(dsn: str) -> str:
    result = subprocess.run(
        [_pg_bin("psql"), "-X", "-A", "-t", "-c", "SHOW data_directory", dsn],
        check=True,
        capture_output=True,
    )
    return result.stdout.decode().strip()


def test_postgres_on_a_port_another_postgres_holds_moves_to_its_own_port(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The defect: our Postgres failed to bind while pg_isready answered from the other one, so
    migrations and tokens went into a foreign database."""
    ours = PostgresServer(tmp_path / "pg", port=postgres_server.port, fast=True)
    ours.start()
    try:
        assert ours.port != postgres_server.port
        assert Path(_data_directory(ours.dsn)).resolve() == (tmp_path / "pg").resolve()
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
