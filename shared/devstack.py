"""`routines dev` (`make run`): the whole system on one machine, no Docker, no system services.

It never uses a server it did not start: Postgres and NATS are checked to be ours after they
answer (data directory, server name), and each service reports the port it bound in its own log.
A port someone else holds is replaced by a free one. `stack.env` exists only while a started
stack is ready; every failure it detects ends with a line saying how to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg

from shared.bootstrap import create_instance_admin_token
from shared.crypto import hash_token, new_secret_key
from shared.devservers import LocalServer, NatsServer, PortInUse, PostgresServer, ServerStartError
from shared.migrate import migrate

DEFAULT_PORTS = {"api": 8080, "webhook-gateway": 8081, "scheduler": 8082, "run-dispatcher": 8083}
POSTGRES_PORT = 55432
NATS_PORT = 54222
START_ATTEMPTS = 3
_CONSOLE_EVENT = re.compile(r"\] (listening|cannot listen)\b")
_CONSOLE_PORT = re.compile(r"\bport=(\d+)")


class DevStackError(Exception):
    """A failure `routines dev` detected, with how to recover from it."""

    def __init__(self, problem: str, recovery: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.recovery = recovery


def _say(message: str) -> None:
    print(f"[routines dev] {message}", flush=True)


def _read_or_create(path: Path, make: Callable[[], object]) -> str:
    if path.exists():
        return path.read_text().strip()
    value = str(make())
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


async def _token_is_known(dsn: str, token: str) -> bool:
    """True when `token` is an unrevoked instance-admin token of this database."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        found = await conn.fetchval(
            "SELECT 1 FROM api_tokens WHERE token_hash = $1 AND kind = 'instance_admin'"
            " AND revoked_at IS NULL",
            hash_token(token),
        )
    finally:
        await conn.close()
    return found is not None


def _admin_token(dev_dir: Path, database_url: str) -> str:
    """The cached admin token when the database knows it, else a new one (cached again)."""
    path = dev_dir / "admin_token"
    if path.exists():
        cached = path.read_text().strip()
        if cached and asyncio.run(_token_is_known(database_url, cached)):
            _say("admin token: the cached one is valid")
            return cached
        _say(f"admin token: {path} is unknown to this database; creating a new one")
    else:
        _say("admin token: creating one")
    token = asyncio.run(create_instance_admin_token(database_url, "make run"))
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _service_port(log_path: Path, offset: int) -> tuple[int | None, bool]:
    """(port the child reported binding, whether it reported it cannot listen) from its log."""
    if not log_path.exists():
        return None, False
    with open(log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    for line in text.splitlines():
        event, port = _log_event(line)
        if event == "listening" and port is not None:
            return port, False
        if event == "cannot listen":
            return None, True
    return None, False


def _log_event(line: str) -> tuple[str | None, int | None]:
    """(event, port) of one service log line, JSON or console format."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return None, None
        port = entry.get("port") if isinstance(entry, dict) else None
        event = entry.get("event") if isinstance(entry, dict) else None
        return (event if isinstance(event, str) else None), (port if isinstance(port, int) else None)
    found = _CONSOLE_EVENT.search(line)
    if found is None:
        return None, None
    port_match = _CONSOLE_PORT.search(line)
    return found.group(1), int(port_match.group(1)) if port_match else None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Service:
    """One service child process; `port` is known once the child itself said it bound it."""

    def __init__(self, name: str, dev_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = dev_dir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, preferred_port: int) -> None:
        """Start on `preferred_port`, or on a port of its own choosing when that one is taken."""
        port = preferred_port
        for _ in range(START_ATTEMPTS):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "shared.cli", self.name],
                    env={**self.env, "ROUTINES_HTTP_PORT": str(port)},
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                bound, refused = _service_port(self.log_path, offset)
                if bound is not None:
                    self.port = bound
                    return
                if refused or self.proc.poll() is not None:
                    break
                time.sleep(0.1)
            self.stop()
            if not refused:
                raise DevStackError(
                    f"{self.name} did not start",
                    f"read {self.log_path}; fix what it reports and run `make run` again",
                )
            _say(f"{self.name}: port {port} is taken by another process; letting it pick a free one")
            port = 0
        raise DevStackError(f"{self.name} could not listen on any port", f"read {self.log_path}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            if _http_ok(self.url + "/readyz"):
                return
            time.sleep(0.2)
        raise DevStackError(
            f"{self.name} did not become ready", f"read {self.log_path} (its last lines say why)"
        )

    def signal_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then wait for the graceful shutdown (killed after 15 s)."""
        self.signal_stop()
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _lock_dev_dir(dev_dir: Path) -> int:
    """Hold `dev_dir/lock` for as long as this process lives (the kernel frees it on any exit, even
    SIGKILL), so a second `routines dev` on the same directory stops before starting anything: its
    servers would share the first one's data (two NATS on one JetStream store) and stopping it
    would delete the first stack's stack.env."""
    path = dev_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DevStackError(
            f"cannot open {path}: {exc.strerror}", "make the directory writable, or set ROUTINES_DEV_DIR"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = "unknown"
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DevStackError(
            f"another `routines dev` (pid {holder}) is using {dev_dir}",
            "stop it (Ctrl-C in its terminal), or give this one its own directory with "
            "ROUTINES_DEV_DIR=.dev2 make run",
        ) from None
    except OSError as exc:  # a filesystem without locks (some NFS or FUSE mounts)
        os.close(fd)
        raise DevStackError(
            f"cannot lock {path}: {exc.strerror}",
            "put the dev directory on a local filesystem with ROUTINES_DEV_DIR",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _report(exc: DevStackError) -> int:
    _say(f"error: {exc.problem}")
    _say(f"to recover: {exc.recovery}")
    return 1


def _write_stack_env(path: Path, values: dict[str, str]) -> None:
    """`export` lines for the stack's URLs and token, and PATH with this installation's `bin`
    directory (the venv `make run` made) first, so `routines …` works in the sourcing shell."""
    bin_dir = Path(sys.executable).parent  # not resolved: the venv's bin, not the base Python's
    lines = [f"export {key}={shlex.quote(value)}\n" for key, value in values.items()]
    lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n')
    path.write_text("".join(lines))
    path.chmod(0o600)


def _given_or_started(
    name: str, variable: str, starting: str, make: Callable[[], LocalServer], servers: list[LocalServer]
) -> str:
    """The URL in `variable`, or else a server of ours started (and added to `servers`, to be
    stopped however the start ends), on its usual port or, when that is taken, on another."""
    given = os.environ.get(variable)
    if given:
        _say(f"{name}: using {variable}")
        return given
    _say(f"{name}: starting {starting}")
    server = make()
    servers.append(server)
    usual_port = server.port
    server.start()
    if server.port != usual_port:
        _say(f"{name}: port {usual_port} is taken by another process; using {server.port}")
    _say(f"{name}: ready on 127.0.0.1:{server.port}")
    return server.url


def _migration_recovery(dev_dir: Path) -> str:
    """What to do when the migrations fail: about the given server when ROUTINES_DATABASE_URL is
    set (often left over from sourcing a stopped stack's stack.env in this shell, and then
    removing the data would not help), else about our own data."""
    if os.environ.get("ROUTINES_DATABASE_URL"):
        return (
            "check ROUTINES_DATABASE_URL: it is set in this shell, so `routines dev` used that server "
            "instead of starting its own (removing the dev directory would not help). If it came from "
            "sourcing the stack.env of a stack that is stopped now, run `unset ROUTINES_DATABASE_URL "
            "ROUTINES_NATS_URL` (or open a new shell) and `make run` again"
        )
    return f"read the error above, or `rm -rf {dev_dir}` to start from empty data"


def run_dev_stack() -> int:
    """Start Postgres and NATS (unless URLs are given), migrate, bootstrap, run the four services."""
    dev_dir = Path(os.environ.get("ROUTINES_DEV_DIR", ".dev")).resolve()
    dev_dir.mkdir(parents=True, exist_ok=True)
    try:
        _lock_dev_dir(dev_dir)  # released when the process exits
    except DevStackError as exc:
        return _report(exc)
    env_file = dev_dir / "stack.env"
    env_file.unlink(missing_ok=True)  # never leave a file pointing at a stack that is not up
    stopping = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_stop)  # the terminal closed: stop the servers too

    servers: list[LocalServer] = []  # stopped in reverse order
    services: list[_Service] = []
    try:
        database_url, nats_url = (
            _given_or_started(name, variable, starting, make, servers)
            for name, variable, starting, make in (
                (
                    "Postgres",
                    "ROUTINES_DATABASE_URL",
                    f"(data in {dev_dir / 'pg'}; the first start initialises it)",
                    lambda: PostgresServer(dev_dir / "pg", port=POSTGRES_PORT),
                ),
                (
                    "NATS",
                    "ROUTINES_NATS_URL",
                    f"with JetStream (data in {dev_dir / 'nats'})",
                    lambda: NatsServer(dev_dir / "nats", port=NATS_PORT),
                ),
            )
        )
        _say("database: applying migrations")
        try:
            asyncio.run(migrate(database_url))
        except (OSError, asyncpg.PostgresError) as exc:
            raise DevStackError(f"migrations failed: {exc}", _migration_recovery(dev_dir)) from None
        secret_key = _read_or_create(dev_dir / "secret_key", new_secret_key)
        admin_token = _admin_token(dev_dir, database_url)
        base_env = {
            **os.environ,
            "ROUTINES_DATABASE_URL": database_url,
            "ROUTINES_NATS_URL": nats_url,
            "ROUTINES_SECRET_KEY": os.environ.get("ROUTINES_SECRET_KEY", secret_key),
            "ROUTINES_HTTP_HOST": "127.0.0.1",
        }
        # The gateway first: the API needs its URL for the webhookUrl of webhook triggers.
        for name in ("webhook-gateway", "api", "scheduler", "run-dispatcher"):
            env = dict(base_env)
            if name == "api":
                env["ROUTINES_PUBLIC_GATEWAY_URL"] = services[0].url
            service = _Service(name, dev_dir, env)
            services.append(service)
            _say(f"{name}: starting (log: {service.log_path})")
            service.start(DEFAULT_PORTS[name])
        for service in services:
            service.wait_ready()
            _say(f"{service.name}: ready on {service.url}")
        urls = {s.name: s.url for s in services}
        _write_stack_env(
            env_file,
            {
                "ROUTINES_API_URL": urls["api"],
                "ROUTINES_GATEWAY_URL": urls["webhook-gateway"],
                "ROUTINES_ADMIN_TOKEN": admin_token,
                "ROUTINES_DATABASE_URL": database_url,
                "ROUTINES_NATS_URL": nats_url,
            },
        )
        _say("ready:")
        for name in DEFAULT_PORTS:
            _say(f"  {name:<16} {urls[name]}")
        _say(f"  API reference    {urls['api']}/api/docs")
        _say(f"  admin token      {admin_token}")
        _say(f"  environment      {env_file}  (in another shell: . {env_file})")
        _say("Ctrl-C stops everything.")
        while not stopping:
            for service in services:
                if service.proc is not None and service.proc.poll() is not None:
                    raise DevStackError(
                        f"{service.name} exited with {service.proc.returncode}",
                        f"read {service.log_path}, then run `make run` again",
                    )
            time.sleep(0.2)
        return 0
    except DevStackError as exc:
        return _report(exc)
    except PortInUse as exc:
        _say(f"error: {exc}")
        _say("to recover: stop the process holding the port, then run `make run` again")
        return 1
    except ServerStartError as exc:
        _say(f"error: {exc}")
        _say("to recover: fix what it reports, or `rm -rf .dev` to start from empty data")
        return 1
    finally:
        env_file.unlink(missing_ok=True)
        _say("stopping")
        for service in services:
            service.signal_stop()
        for service in services:
            service.stop()
        for server in reversed(servers):
            server.stop()
        _say("stopped")
