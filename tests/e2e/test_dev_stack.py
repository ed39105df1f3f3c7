"""`routines dev` (what `make run` starts): four ready services and a stack.env for scripts, on
servers it started itself even when every default port is held by someone else."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest

from shared.devstack import DEFAULT_PORTS, NATS_PORT, POSTGRES_PORT

pytestmark = pytest.mark.e2e

STACK_KEYS = {
    "ROUTINES_API_URL",
    "ROUTINES_GATEWAY_URL",
    "ROUTINES_ADMIN_TOKEN",
    "ROUTINES_DATABASE_URL",
    "ROUTINES_NATS_URL",
}


@dataclass
class DevStack:
    proc: subprocess.Popen[bytes]
    dev_dir: Path
    output_path: Path

    @property
    def env_file(self) -> Path:
        return self.dev_dir / "stack.env"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def values(self) -> dict[str, str]:
        """stack.env as the shell sees it after sourcing it."""
        script = f". {self.env_file}; env -0"
        out = subprocess.run(["sh", "-c", script], env={}, capture_output=True, check=True).stdout
        pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
        return {k: v for k, v in pairs if k in STACK_KEYS}

    def urls(self) -> dict[str, str]:
        found = {}
        for line in self.output().splitlines():
            for name in DEFAULT_PORTS:
                if f"  {name} " in line:
                    found[name] = line.split()[-1]
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def start_dev_stack(tmp_path: Path, dev_dirname: str = "dev", **extra_env: str) -> DevStack:
    """`routines dev` in `tmp_path/dev_dirname`, returned once stack.env exists (ready then)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    env["ROUTINES_DEV_DIR"] = str(tmp_path / dev_dirname)
    env.update(extra_env)
    output_path = tmp_path / "dev-output.log"
    with open(output_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "dev"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    stack = DevStack(proc, tmp_path / dev_dirname, output_path)
    deadline = time.monotonic() + 120
    while not stack.env_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if not stack.env_file.exists():
        _stop(stack)
        raise AssertionError("routines dev did not become ready:\n" + stack.output())
    return stack


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    stack = start_dev_stack(tmp_path)
    try:
        yield stack
    finally:
        _stop(stack)


def _stop(stack: DevStack) -> None:
    """SIGTERM so `routines dev` stops its Postgres and NATS too (SIGKILL would orphan them)."""
    try:
        stack.stop()
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        stack.proc.wait()


def _get_json(url: str, token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_dev_stack_starts_everything_and_stops_cleanly(dev_stack: DevStack) -> None:
    values = dev_stack.values()
    assert set(values) == STACK_KEYS, dev_stack.env_file.read_text()
    assert all(line.startswith("export ") for line in dev_stack.env_file.read_text().splitlines())
    assert values["ROUTINES_ADMIN_TOKEN"].startswith("rta_")
    urls = dev_stack.urls()
    assert set(urls) == set(DEFAULT_PORTS)
    for url in urls.values():
        status, _ = _get_json(url + "/readyz")
        assert status == 200
    assert dev_stack.stop() == 0
    assert not dev_stack.env_file.exists(), "stack.env must not outlive the stack"


def test_sourced_stack_env_is_enough_for_bootstrap(dev_stack: DevStack) -> None:
    """`. .dev/stack.env; routines bootstrap` works in a fresh shell: the file exports its
    variables and puts the installation's `bin` (where `routines` is) first on PATH."""
    bin_dir = Path(sys.executable).parent
    path_lines = [line for line in dev_stack.env_file.read_text().splitlines() if "PATH=" in line]
    assert path_lines == [f'export PATH={bin_dir}:"$PATH"'], dev_stack.env_file.read_text()
    script = f". {dev_stack.env_file} && command -v routines && routines bootstrap --name sourced"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    clean_env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    result = subprocess.run(["sh", "-c", script], env=clean_env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    found, token = result.stdout.decode().split()
    assert found == str(bin_dir / "routines")
    assert token.startswith("rta_")


def test_stale_cached_admin_token_is_replaced(tmp_path: Path) -> None:
    """A cached admin token the database does not know is re-bootstrapped, not handed out."""
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    stale = "rta_" + "x" * 40
    (dev_dir / "admin_token").write_text(stale + "\n")
    stack = start_dev_stack(tmp_path)
    try:
        token = stack.values()["ROUTINES_ADMIN_TOKEN"]
        assert token != stale
        assert (dev_dir / "admin_token").read_text().strip() == token
        status, _ = _get_json(stack.values()["ROUTINES_API_URL"] + "/api/companies", token)
        assert status == 200
        assert "unknown to this database" in stack.output()
    finally:
        stack.stop()


class _ImpostorHTTP(BaseHTTPRequestHandler):
    """Answers 200 to everything: a naive readiness check would take it for our service."""

    def do_GET(self) -> None:
        body = b'{"status": "ready", "impostor": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _impostor_tcp(port: int, greeting: bytes) -> socket.socket | None:
    """A listener on `port` that greets each connection like a server would (None: port busy)."""
    sock = socket.socket()
    # As servers do: a port whose last server has just stopped (connections in TIME_WAIT) can be
    # bound again, while one another process listens on still cannot.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.sendall(greeting)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock


T = TypeVar("T")


def _hold(port: int, bind: Callable[[int], T | None], seconds: float = 60) -> T:
    """Bind `port` for the test, waiting while a server of an earlier test still shuts down. A port
    that is busy now but freed later in the test would let `routines dev` take it, so the test
    must own every default port for its whole length, not only find it busy once."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError):
            held = bind(port)
            if held is not None:
                return held
        if time.monotonic() > deadline:
            pytest.fail(f"port {port} stayed busy for {seconds:.0f} s; the test needs to hold it itself")
        time.sleep(0.2)


@pytest.fixture
def default_ports_held() -> Iterator[None]:
    """Every default port answered by an impostor: HTTP 200s, a foreign NATS, a Postgres port."""
    servers: list[ThreadingHTTPServer] = []
    sockets: list[socket.socket] = []
    info = b'INFO {"server_id":"IMPOSTOR","server_name":"someone-else","version":"2.10.0"}\r\n'
    try:
        for port in DEFAULT_PORTS.values():
            server = _hold(port, lambda p: ThreadingHTTPServer(("127.0.0.1", p), _ImpostorHTTP))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        for port, greeting in ((NATS_PORT, info), (POSTGRES_PORT, b"")):
            sockets.append(_hold(port, functools.partial(_impostor_tcp, greeting=greeting)))
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for sock in sockets:
            sock.close()


def test_busy_default_ports_never_lead_to_foreign_servers(default_ports_held: None, tmp_path: Path) -> None:
    """With every default port held by another process, `routines dev` starts its own servers on
    other ports, and everything stack.env points at is ours."""
    stack = start_dev_stack(tmp_path)
    try:
        values = stack.values()
        urls = stack.urls()
        for name, default in DEFAULT_PORTS.items():
            assert not urls[name].endswith(f":{default}"), (name, stack.output())
            status, body = _get_json(urls[name] + "/readyz")
            assert status == 200
            assert isinstance(body, dict) and "impostor" not in body and body["postgres"] == "ok"
        assert f":{POSTGRES_PORT}/" not in values["ROUTINES_DATABASE_URL"]
        assert not values["ROUTINES_NATS_URL"].endswith(f":{NATS_PORT}")
        status, companies = _get_json(
            values["ROUTINES_API_URL"] + "/api/companies", values["ROUTINES_ADMIN_TOKEN"]
        )
        assert status == 200 and companies == []
        assert "taken by another process" in stack.output()
        assert stack.stop() == 0
    finally:
        _stop(stack)


def test_a_failed_start_removes_stale_stack_env_and_says_how_to_recover(tmp_path: Path) -> None:
    """A stale stack.env from an earlier run must not survive a start that fails."""
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "stack.env").write_text("export ROUTINES_API_URL=http://127.0.0.1:8080\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    env["ROUTINES_DEV_DIR"] = str(dev_dir)
    env["ROUTINES_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing"
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "dev"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert not (dev_dir / "stack.env").exists()
    assert "[routines dev] error: migrations failed" in result.stdout
    assert "[routines dev] to recover: check ROUTINES_DATABASE_URL" in result.stdout
    # The URL often comes from sourcing a stopped stack's stack.env: say so, and do not advise
    # throwing the data away (it would not help).
    assert "unset ROUTINES_DATABASE_URL ROUTINES_NATS_URL" in result.stdout
    assert "rm -rf" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def _free_port() -> int:
    from shared.devservers import free_port

    return free_port()


def test_a_second_make_run_in_the_same_directory_is_refused_and_leaves_the_first_alone(
    dev_stack: DevStack,
) -> None:
    """Two terminals, `make run` in both: the second must not start servers on the first one's data
    (a second NATS on the same JetStream store; its Postgres quietly 'ready' through the first's
    socket), and stopping it must not delete the first stack's stack.env."""
    before = dev_stack.env_file.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    env["ROUTINES_DEV_DIR"] = str(dev_stack.dev_dir)
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "dev"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout
    assert "[routines dev] error: another `routines dev` (pid " in result.stdout, result.stdout
    assert "[routines dev] to recover:" in result.stdout
    assert "starting" not in result.stdout, "nothing may be started on a directory in use"
    assert "Traceback" not in result.stdout + result.stderr
    assert dev_stack.env_file.read_text() == before, "the first stack's stack.env must survive"
    for url in dev_stack.urls().values():
        status, _ = _get_json(url + "/readyz")
        assert status == 200


def test_closing_the_terminal_stops_the_servers_too(dev_stack: DevStack) -> None:
    """SIGHUP (the terminal closed) stops everything like Ctrl-C; before, it killed `routines dev`
    alone and left its Postgres and NATS running in their own sessions."""
    postmaster = int((dev_stack.dev_dir / "pg" / "postmaster.pid").read_text().split()[0])
    dev_stack.proc.send_signal(signal.SIGHUP)
    assert dev_stack.proc.wait(60) == 0
    assert not dev_stack.env_file.exists()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"Postgres (pid {postmaster}) outlived routines dev")
