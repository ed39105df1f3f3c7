"""ROUTINES_NATS_CREDS_FILE: a service authenticates to a NATS server in operator (JWT) mode with
a user `.creds` file (JWT + nkey seed), and declares its streams in that account."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from shared.bus import RUNS_STREAM
from shared.devservers import free_port, nats_server_binary, stop_process, wait_for_port
from tests.production.buses import connected_bus, nats_only_settings
from tests.production.nkeys_jwt import operator_setup

pytestmark = pytest.mark.production


@pytest.fixture
def operator_nats(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, path of a user's .creds file) of a JetStream server in operator mode."""
    config, creds = operator_setup()
    port = free_port()
    (tmp_path / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp_path / 'js'} }}\n" + config
    )
    (tmp_path / "user.creds").write_text(creds)
    log = open(tmp_path / "nats.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf")],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    try:
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}", tmp_path / "user.creds"
    finally:
        stop_process(proc)


async def test_service_connects_with_a_creds_file(operator_nats: tuple[str, Path]) -> None:
    url, creds = operator_nats
    # Without credentials the operator-mode server refuses the connection.
    refused = NATS()
    try:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await refused.connect(url, allow_reconnect=False, connect_timeout=5)
    finally:
        await refused.close()  # nats-py leaves the refused socket open otherwise
    async with connected_bus(nats_only_settings(url, nats_creds_file=str(creds)), "creds", timeout=30) as bus:
        assert bus.is_connected
        assert (await bus.stream_info(RUNS_STREAM)).config.num_replicas == 1
