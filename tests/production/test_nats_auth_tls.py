"""NATS credentials and TLS from the settings, against a real nats-server with TLS and a token."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.bus import RUNS_STREAM, connect_options
from shared.devservers import free_port, nats_server_binary, stop_process, wait_for_port
from shared.settings import CommonSettings
from tests.production.buses import connected_bus, nats_only_settings

pytestmark = pytest.mark.production

TOKEN = "s3cret-token-for-tests"


def _certificates(folder: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "routines test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[str]:
    _certificates(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            nats_server_binary(),
            "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js"),
            "--tls", "--tlscert", str(tmp_path / "server.pem"), "--tlskey", str(tmp_path / "server-key.pem"),
            "--auth", TOKEN,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"tls://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def settings(url: str, token: str, ca_file: str | None) -> CommonSettings:
    return nats_only_settings(url, nats_token=token, nats_tls_ca_file=ca_file)


async def test_services_connect_with_token_over_verified_tls(tls_nats: str, tmp_path: Path) -> None:
    async with connected_bus(settings(tls_nats, TOKEN, str(tmp_path / "ca.pem")), "test", timeout=20) as bus:
        assert bus.is_connected
        assert (await bus.stream_info(RUNS_STREAM)).config.num_replicas == 1


async def test_wrong_token_or_unverified_server_is_refused(tls_nats: str, tmp_path: Path) -> None:
    ca = str(tmp_path / "ca.pem")
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            tls_nats,
            allow_reconnect=False,
            connect_timeout=5,
            **connect_options(settings(tls_nats, "wrong", ca)),
        )
    # Without our CA the server's certificate does not verify.
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            tls_nats,
            allow_reconnect=False,
            connect_timeout=5,
            **connect_options(settings(tls_nats, TOKEN, None)) | {"tls": ssl.create_default_context()},
        )
