"""Production-shaped infrastructure for tests: PgBouncer in transaction pooling mode in front of
the embedded Postgres, and a 3-node NATS cluster with JetStream, per-service users and
permissions (the server config of deploy/nats/), all on loopback."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.devservers import (
    PG_SYSTEM_USER,
    _make_traversable,
    free_port,
    nats_server_binary,
    stop_process,
    wait_for_port,
)

SERVICE_ROLES = {
    "api": "routines_api",
    "webhook-gateway": "routines_gateway",
    "scheduler": "routines_scheduler",
    "run-dispatcher": "routines_dispatcher",
}
REPO = Path(__file__).resolve().parents[2]
NATS_AUTH_CONFIG = REPO / "deploy" / "nats" / "routines-auth.conf"


def ensure_debian_package(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first when it is missing (CI starts
    on a fresh machine; we are root there)."""
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, binary).exists():
            return str(Path(folder, binary))
    found = shutil.which(binary)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, binary).exists():
            return str(Path(folder, binary))
    raise FileNotFoundError(f"{binary} not found after installing {package}")


@dataclass
class PgBouncer:
    """PgBouncer, `pool_mode = transaction`, trust auth for the listed users, every database
    forwarded to the Postgres on `pg_port`. No `ignore_startup_parameters`: clients that send
    timeouts as startup parameters are refused, as in a stock deployment."""

    work_dir: Path
    pg_port: int
    users: list[str]
    pool_size: int = 20
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    def dsn_for(self, database: str, user: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        binary = ensure_debian_package("pgbouncer", "pgbouncer")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        (self.work_dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.work_dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 2000\n"
            f"default_pool_size = {self.pool_size}\n"
            "server_reset_query =\n"
            f"logfile = {self.work_dir / 'pgbouncer.log'}\n"
            "admin_users = postgres\n"
        )
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            _make_traversable(self.work_dir)
            for path in [self.work_dir, *self.work_dir.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._proc = subprocess.Popen(
            [binary, str(self.work_dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **as_user,
        )
        wait_for_port(self.port, timeout=15)

    def log(self) -> str:
        path = self.work_dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None


# Passwords of the per-service NATS users in deploy/nats/routines-auth.conf come from the
# environment of the server (NATS config `$VAR`); tests set them here.
NATS_PASSWORDS = {name: f"test-{name}-pw" for name in SERVICE_ROLES}


@dataclass
class NatsNode:
    name: str
    store_dir: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


class NatsCluster:
    """Three nats-server processes in one cluster (JetStream, file storage) with the per-service
    users and permissions of deploy/nats/routines-auth.conf."""

    def __init__(self, work_dir: Path, size: int = 3) -> None:
        self.work_dir = work_dir
        self.nodes = [NatsNode(f"n{i}", work_dir / f"n{i}") for i in range(size)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def _config(self, node: NatsNode) -> Path:
        routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes if n is not node)
        path = self.work_dir / f"{node.name}.conf"
        path.write_text(
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.client_port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(node.store_dir))} }}\n"
            f"cluster {{ name: routines-test, listen: 127.0.0.1:{node.cluster_port}, routes: [{routes}] }}\n"
            # `include` paths are relative to the including file: use a copy beside it.
            "include routines-auth.conf\n"
        )
        return path

    def start_node(self, node: NatsNode) -> None:
        node.store_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **{f"NATS_{name.upper().replace('-', '_')}_PASSWORD": pw for name, pw in NATS_PASSWORDS.items()},
            "NATS_ADMIN_PASSWORD": "test-admin-pw",
        }
        log = open(self.work_dir / f"{node.name}.log", "ab")  # noqa: SIM115 - owned by the child
        node.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self._config(node))],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        log.close()
        wait_for_port(node.client_port)

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(NATS_AUTH_CONFIG, self.work_dir / "routines-auth.conf")
        try:
            for node in self.nodes:
                self.start_node(node)
        except BaseException:
            self.stop()
            raise

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL: no goodbye to the cluster, no flush."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            stop_process(node.proc)
            node.proc = None

    def logs(self) -> str:
        return "\n".join(
            (self.work_dir / f"{n.name}.log").read_text(errors="replace")[-3000:]
            for n in self.nodes
            if (self.work_dir / f"{n.name}.log").exists()
        )


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met")
