"""Test helpers: real servers, real service processes, log capture."""

from __future__ import annotations

import atexit
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats

from shared.bus import Bus
from shared.db import Database
from shared.devservers import free_port, wait_for_port
from shared.settings import CommonSettings

# Every service process a test starts, so a fixture (and, as a last resort, interpreter exit) can
# end them all however the test ends: failure, error or KeyboardInterrupt.
RUNNING: list[ServiceProcess] = []


def stop_all_processes() -> None:
    """Kill every service process started since the registry was last emptied."""
    while RUNNING:
        RUNNING.pop().kill()


atexit.register(stop_all_processes)

TEST_SECRET_KEY = base64.b64encode(b"k" * 32).decode()


@dataclass
class Stack:
    """Connection facts of one test's database and NATS server."""

    database_url: str
    nats_url: str
    secret_key: str = TEST_SECRET_KEY

    def env(self, **extra: Any) -> dict[str, str]:
        values = {
            "ROUTINES_DATABASE_URL": self.database_url,
            "ROUTINES_NATS_URL": self.nats_url,
            "ROUTINES_SECRET_KEY": self.secret_key,
            "ROUTINES_LOG_FORMAT": "json",
            "ROUTINES_SHUTDOWN_TIMEOUT_SEC": "5",
        }
        values.update({f"ROUTINES_{k.upper()}": str(v) for k, v in extra.items()})
        return values


class ServiceDied(RuntimeError):
    """A service process exited while a test waited for it to listen or become ready."""


@dataclass(eq=False)
class ServiceProcess:
    """One service run as a real process (`routines <name>`), its logs kept in a file."""

    name: str
    env: Mapping[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> ServiceProcess:
        """Start the process and wait until it listens (and, by default, is ready)."""
        self.launch()
        self.wait_listening()
        if wait_ready:
            self.wait_ready()
        return self

    def launch(self) -> ServiceProcess:
        """Start the process without waiting (to start several at once)."""
        env = {
            **os.environ,
            **self.env,
            "ROUTINES_HTTP_PORT": str(self.port),
            "ROUTINES_HTTP_HOST": "127.0.0.1",
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", self.name], env=env, stdout=log, stderr=log
        )
        log.close()
        if self not in RUNNING:
            RUNNING.append(self)
        return self

    def _check_alive(self) -> None:
        """Raise at once (with the log tail) if the child has already exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ServiceDied(f"{self.name} exited with code {code}; log:\n{self.logs()[-3000:]}")

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not listening on {self.port}; log:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready; log:\n{self.logs()[-3000:]}")

    @property
    def exit_code(self) -> int | None:
        """None while running (or never started); the exit code once it has exited."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.logs().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines


def start_service(
    name: str, env: Mapping[str, str], tmp_path: Path, wait_ready: bool = True
) -> ServiceProcess:
    return ServiceProcess(name, env, tmp_path / f"{name}-{free_port()}.log").start(wait_ready)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def publish_raw(nats_url: str, subject: str, *messages: bytes) -> None:
    """Publish bytes no service would send (garbage, poison) from a connection of its own; they
    have reached the server when this returns."""
    nc = await nats.connect(nats_url)
    try:
        for data in messages:
            await nc.publish(subject, data)
        await nc.flush()
    finally:
        await nc.close()


__all__ = [
    "RUNNING",
    "ServiceDied",
    "ServiceProcess",
    "Stack",
    "aiohttp",
    "free_port",
    "publish_raw",
    "start_service",
    "stop_all_processes",
    "wait_for_port",
    "wait_until",
]


@asynccontextmanager
async def service_connections(settings: CommonSettings, name: str) -> AsyncIterator[tuple[Database, Bus]]:
    """A service's database pool (open) and bus (connected) for a service built inside a test,
    closed after it."""
    database = Database(settings, name)
    await database.open()
    bus = Bus(settings.nats_url, name)
    try:
        await bus.connect_forever()
        yield database, bus
    finally:
        await bus.close()
        await database.close()
