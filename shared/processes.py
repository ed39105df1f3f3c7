"""Service processes run for tests and benchmarks: `routines <name>` as a real child process
with its logs in a file, the registry that ends them all, and the stack facts they connect to."""

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.devservers import free_port
from shared.lifecycle import EXIT_CANNOT_LISTEN

# Every service process started here, so a test fixture or a benchmark (and, as a last resort,
# interpreter exit) can end them all however the run ends: failure, error or KeyboardInterrupt.
RUNNING: list[ServiceProcess] = []


def stop_all_processes() -> None:
    """Kill every service process started since the registry was last emptied."""
    while RUNNING:
        RUNNING.pop().kill()


atexit.register(stop_all_processes)

# Ports tried before a service that cannot listen is given up on (another process took each).
LISTEN_ATTEMPTS = 5

# A fixed key for throwaway local stacks (tests, benchmarks): never for data that is kept.
THROWAWAY_SECRET_KEY = base64.b64encode(b"k" * 32).decode()


@dataclass
class Stack:
    """Connection facts of one throwaway database and NATS server (a test's, a benchmark's)."""

    database_url: str
    nats_url: str
    secret_key: str = THROWAWAY_SECRET_KEY

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
    """A service process exited while we waited for it to listen or become ready."""


@dataclass(eq=False)
class ServiceProcess:
    """One service run as a real process (`routines <name>`), its logs kept in a file."""

    name: str
    env: Mapping[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # Set once the process has listened: a restart keeps its port (clients hold its URL).
    pinned: bool = False
    _log_offset: int = 0  # the log's size when the process was last launched

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
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
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
        """Wait until the child itself listens on its port. Something answering there is no proof:
        another process may hold the port (the child then exits, unable to listen), and a test
        would talk to it. A port taken before the first start is replaced by a fresh one."""
        deadline = time.monotonic() + timeout
        attempts = 1
        while True:
            assert self.proc is not None
            if self.proc.poll() == EXIT_CANNOT_LISTEN and not self.pinned and attempts < LISTEN_ATTEMPTS:
                attempts += 1
                # That attempt's log (its "cannot listen" error) goes: tests read logs for errors.
                os.truncate(self.log_path, self._log_offset)
                self.port = free_port()
                self.launch()
                continue
            self._check_alive()
            if self._listens():
                self.pinned = True
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not listening on {self.port}; log:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def _listens(self) -> bool:
        """The child has a listening socket on its port (its own, not another process's). Asked of
        psutil (which reads all of /proc/net/tcp) only once something answers on the port."""
        import psutil

        assert self.proc is not None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            sockets = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == self.port for s in sockets)

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
