"""`routines dev` (`make run`): the whole system on one machine, no Docker, no system services."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from shared.crypto import new_secret_key
from shared.devservers import NatsServer, PostgresServer, free_port
from shared.directory import create_instance_admin_token
from shared.migrate import migrate

DEFAULT_PORTS = {"api": 8080, "webhook-gateway": 8081, "scheduler": 8082, "run-dispatcher": 8083}


def _port_or_free(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def _say(message: str) -> None:
    print(f"[routines dev] {message}", flush=True)


def _read_or_create(path: Path, make: Callable[[], object]) -> str:
    if path.exists():
        return path.read_text().strip()
    value = str(make())
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _wait_ready(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def run_dev_stack() -> int:
    """Start Postgres and NATS (unless URLs are given), migrate, bootstrap, run the four services."""
    dev_dir = Path(os.environ.get("ROUTINES_DEV_DIR", ".dev")).resolve()
    dev_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    postgres: PostgresServer | None = None
    nats: NatsServer | None = None
    database_url = os.environ.get("ROUTINES_DATABASE_URL")
    nats_url = os.environ.get("ROUTINES_NATS_URL")
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if not database_url:
            _say(f"starting Postgres (data in {dev_dir / 'pg'})")
            postgres = PostgresServer(dev_dir / "pg", port=_port_or_free(55432))
            postgres.start()
            database_url = postgres.dsn
        if not nats_url:
            _say(f"starting NATS with JetStream (data in {dev_dir / 'nats'})")
            nats = NatsServer(dev_dir / "nats", port=_port_or_free(54222))
            nats.start()
            nats_url = nats.url
        _say("applying migrations")
        asyncio.run(migrate(database_url))
        secret_key = _read_or_create(dev_dir / "secret_key", new_secret_key)
        admin_token = _read_or_create(
            dev_dir / "admin_token",
            lambda: asyncio.run(create_instance_admin_token(database_url, "make run")),
        )
        ports = {name: _port_or_free(port) for name, port in DEFAULT_PORTS.items()}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        base_env = {
            **os.environ,
            "ROUTINES_DATABASE_URL": database_url,
            "ROUTINES_NATS_URL": nats_url,
            "ROUTINES_SECRET_KEY": os.environ.get("ROUTINES_SECRET_KEY", secret_key),
            "ROUTINES_PUBLIC_GATEWAY_URL": urls["webhook-gateway"],
            "ROUTINES_HTTP_HOST": "127.0.0.1",
        }
        for name, port in ports.items():
            log = open(dev_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", name],
                env={**base_env, "ROUTINES_HTTP_PORT": str(port)},
                stdout=log,
                stderr=log,
            )
            log.close()
        for name, url in urls.items():
            if not _wait_ready(url):
                _say(f"{name} did not become ready; see {dev_dir / (name + '.log')}")
                return 1
        env_file = dev_dir / "stack.env"
        env_file.write_text(
            f"ROUTINES_API_URL={urls['api']}\n"
            f"ROUTINES_GATEWAY_URL={urls['webhook-gateway']}\n"
            f"ROUTINES_ADMIN_TOKEN={admin_token}\n"
            f"ROUTINES_DATABASE_URL={database_url}\n"
            f"ROUTINES_NATS_URL={nats_url}\n"
        )
        env_file.chmod(0o600)
        _say("ready:")
        for name, url in urls.items():
            _say(f"  {name:<16} {url}")
        _say(f"  admin token      {admin_token}")
        _say(f"  environment      {env_file}")
        _say("Ctrl-C stops everything.")
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    _say(f"{name} exited with {child.returncode}; stopping")
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        _say("stopping")
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()
        _say("stopped")
