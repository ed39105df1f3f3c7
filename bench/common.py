"""Shared pieces of the benchmarks: servers, service processes, seeding, RSS sampling, stats."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import asyncpg
import psutil

from shared.bus import Bus
from shared.crypto import SecretBox, new_public_id, new_webhook_secret
from shared.devservers import NatsServer, PostgresServer
from shared.migrate import migrate
from shared.processes import ServiceProcess, Stack

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Servers:
    pg: PostgresServer
    nats: NatsServer
    tmp: Path

    async def fresh_stack(self, name: str) -> Stack:
        admin = await asyncpg.connect(self.pg.dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        dsn = self.pg.dsn_for(name)
        await migrate(dsn)
        return Stack(database_url=dsn, nats_url=self.nats.url)


STATEMENT_STATS = ("shared_preload_libraries=pg_stat_statements",)
"""Postgres settings for a benchmark's `--statements`: time by statement (pg_stat_statements)."""


async def reset_statement_stats(conn: asyncpg.Connection) -> None:
    """Start counting statements' time afresh (the extension created on first use)."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await conn.execute("SELECT pg_stat_statements_reset()")


async def top_statements(
    conn: asyncpg.Connection,
    limit: int,
    leave_out: str = "",
    by: Literal["total_exec_time", "wal_bytes"] = "total_exec_time",
) -> list[asyncpg.Record]:
    """The statements Postgres spent most time in since the reset (waits for locks included), or
    wrote the most WAL (`by="wal_bytes"`), whitespace folded; `leave_out`: a statement (as
    pg_stat_statements writes it) not to list."""
    assert by in ("total_exec_time", "wal_bytes")
    return await conn.fetch(
        "SELECT calls, total_exec_time, wal_bytes, wal_fpi, regexp_replace(query, '\\s+', ' ', 'g') AS query"
        f" FROM pg_stat_statements WHERE query <> $1 ORDER BY {by} DESC LIMIT $2",
        leave_out,
        limit,
    )


@asynccontextmanager
async def servers(fast: bool = False, pg_settings: Sequence[str] = ()) -> AsyncIterator[Servers]:
    """Durable Postgres (fsync on: commits cost what they cost in production; off when `fast`;
    `pg_settings`: more server settings) and NATS."""
    with tempfile.TemporaryDirectory() as tmp:
        pg = PostgresServer(Path(tmp) / "pg", fast=fast, settings=pg_settings)
        nats = NatsServer(Path(tmp) / "nats")
        pg.start()
        nats.start()
        try:
            yield Servers(pg, nats, Path(tmp))
        finally:
            nats.stop()
            pg.stop()


class PeakRss:
    """Samples the resident set size of service processes; keeps each service's peak (MB)."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._watched: list[tuple[str, ServiceProcess]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, process: ServiceProcess) -> ServiceProcess:
        self._watched.append((process.name, process))
        return process

    async def _sample(self) -> None:
        while True:
            for name, process in self._watched:
                if process.proc is not None and process.proc.poll() is None:
                    try:
                        rss = psutil.Process(process.proc.pid).memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class World:
    company_id: uuid.UUID
    agent_id: uuid.UUID
    project_id: uuid.UUID
    routines: list[uuid.UUID] = field(default_factory=list)
    hooks: list[tuple[str, str]] = field(default_factory=list)  # (public id, secret)


async def seed_owner(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A company with one agent and one project: (company, agent, project)."""
    company = await conn.fetchval("INSERT INTO companies (name) VALUES ('bench') RETURNING id")
    agent = await conn.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'a') RETURNING id", company
    )
    project = await conn.fetchval(
        "INSERT INTO projects (company_id, name) VALUES ($1, 'p') RETURNING id", company
    )
    return company, agent, project


async def seed(conn: asyncpg.Connection, routines: int, policy: str = "always_enqueue") -> World:
    company, agent, project = await seed_owner(conn)
    ids = await conn.fetch(
        "INSERT INTO routines (company_id, title, assignee_agent_id, project_id, concurrency_policy)"
        " SELECT $1, 'bench ' || g, $2, $3, $4 FROM generate_series(1, $5) g RETURNING id",
        company,
        agent,
        project,
        policy,
        routines,
    )
    return World(company, agent, project, [r["id"] for r in ids])


class Seeded(NamedTuple):
    servers: Servers
    stack: Stack
    conn: asyncpg.Connection
    world: World


@asynccontextmanager
async def seeded(
    name: str, routines: int, policy: str = "always_enqueue", pg_settings: Sequence[str] = ()
) -> AsyncIterator[Seeded]:
    """What every benchmark starts from: fresh servers, the migrated database `name` seeded with
    `routines` routines, and a connection to it (closed at the end)."""
    RESULTS.mkdir(exist_ok=True)
    async with servers(pg_settings=pg_settings) as s:
        stack = await s.fresh_stack(name)
        conn = await asyncpg.connect(stack.database_url)
        try:
            yield Seeded(s, stack, conn, await seed(conn, routines, policy=policy))
        finally:
            await conn.close()


async def timed_then_cleared(
    conn: asyncpg.Connection, table: str, work: Callable[[], Awaitable[Any]]
) -> float:
    """Seconds `work` takes (a baseline to compare a service with); then `table` is emptied again."""
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    await clear(conn, table)
    return elapsed


async def clear(conn: asyncpg.Connection, table: str) -> None:
    """Delete every row of `table`, whose rows nothing references (a benchmark's own rows).

    The per-row foreign-key checks are skipped: deleting rows makes Postgres look for what
    references each one, and the services never delete issues or runs, so those references have
    no index (tests/integration/test_migrations.py) — 40,000 runs took a scan of the table per
    row and ran into the statement timeout."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(f"DELETE FROM {table}")


async def add_webhooks(
    conn: asyncpg.Connection, world: World, secret_key: str, mode: str = "hmac_sha256"
) -> None:
    """One webhook trigger per routine (bulk: two statements, whatever the count)."""
    box = SecretBox(secret_key)
    ids = [uuid.uuid4() for _ in world.routines]
    public_ids = [new_public_id() for _ in world.routines]
    secrets = [new_webhook_secret() for _ in world.routines]
    await conn.execute(
        "INSERT INTO routine_triggers (id, routine_id, company_id, kind, public_id, signing_mode, replay_window_sec)"
        " SELECT t, r, $3, 'webhook', p, $5, 3600 FROM unnest($1::uuid[], $2::uuid[], $4::text[]) AS u(t, r, p)",
        ids,
        world.routines,
        world.company_id,
        public_ids,
        mode,
    )
    await conn.execute(
        "INSERT INTO webhook_secrets (trigger_id, ciphertext) SELECT * FROM unnest($1::uuid[], $2::bytea[])",
        ids,
        [box.encrypt(secret, str(t)) for t, secret in zip(ids, secrets, strict=True)],
    )
    world.hooks.extend(zip(public_ids, secrets, strict=True))


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants as they are now (none if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def pin(pids: Iterable[int], cpus: set[int], *, descendants: bool = True) -> None:
    """Run each process in `pids` (and its descendants) with every thread of theirs on `cpus` only
    (processes and threads they start later inherit it). A process gone meanwhile is skipped."""
    for pid in pids:
        tree = process_tree(pid)
        for proc in tree if descendants else tree[:1]:
            try:
                threads = [t.id for t in proc.threads()]
            except psutil.Error:
                continue
            for tid in threads:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, cpus)


class CpuMeter:
    """CPU seconds (user + system) used by named processes and their children between two reads:
    those that exited in between too (a process's children_* times hold its reaped children's;
    Postgres' backends and autovacuum workers come and go)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            total = 0.0
            for proc in process_tree(pid):
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    continue
            out[name] = total
        return out

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        """Cores used on average by each process over `seconds`."""
        return {name: round((after[name] - before[name]) / seconds, 3) for name in before}


def run_queue_seconds(pids: dict[str, int]) -> dict[str, dict[int, float]]:
    """Seconds each thread of the named processes and their children has spent so far ready to
    run and waiting for a core (/proc/…/schedstat), by thread id: `run_queue_waits` of two reads
    gives the mean number of each process's threads kept waiting between them."""
    out: dict[str, dict[int, float]] = {}
    for name, pid in pids.items():
        waited: dict[int, float] = {}
        for proc in process_tree(pid):
            try:
                for task in Path(f"/proc/{proc.pid}/task").iterdir():
                    waited[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
            except (OSError, ValueError, IndexError):
                continue
        out[name] = waited
    return out


def run_queue_waits(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], seconds: float
) -> dict[str, float]:
    """Mean threads of each process waiting for a core between two `run_queue_seconds` reads:
    those alive at the second read (one that started in between, from nothing; one that exited in
    between, such as a Postgres backend, is not counted — never a negative figure)."""
    return {
        name: round(sum(w - before[name].get(tid, 0.0) for tid, w in threads.items()) / seconds, 3)
        for name, threads in after.items()
    }


def machine_cpu() -> tuple[float, float]:
    """(all, idle) CPU seconds of the whole machine so far; two reads give the cores busy between.
    Linux counts guest time inside user time: it is left out of the sum."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    counted = {name: value for name, value in times._asdict().items() if name not in ("guest", "guest_nice")}
    return sum(counted.values()), idle


def machine_busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores of the whole machine busy between two `machine_cpu` reads (load generator included)."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return cpu_count() * (1 - idle / total) if total > 0 else 0.0


_BURN = """
import sys, time
duty = float(sys.argv[1])
while True:
    end = time.perf_counter() + duty / 100
    while time.perf_counter() < end:
        pass
    time.sleep((1 - duty) / 100)
"""


@contextmanager
def cpu_burner(cores: float) -> Iterator[list[int]]:
    """Unrelated work on the same machine while inside: processes (their pids given) that keep
    `cores` cores busy in all, each busy a share of every 10 ms; killed on the way out. A control:
    what any such load costs what is measured."""
    procs: list[subprocess.Popen[bytes]] = []
    left = max(0.0, cores)
    try:
        while left > 0.005:
            duty = min(1.0, left)
            procs.append(subprocess.Popen([sys.executable, "-c", _BURN, str(duty)]))
            left -= duty
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def in_transaction(conn: asyncpg.Connection, pid: int) -> bool:
    """Whether the process `pid` has a Postgres backend inside a transaction holding row locks."""
    try:
        ports = [c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr]
    except psutil.Error:
        return False
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE client_port = ANY($1::int[]) AND backend_xid IS NOT NULL AND state <> 'idle'",
            ports,
        )
    )


async def stop_mid_transaction(conn: asyncpg.Connection, pid: int, attempts: int = 1000) -> bool:
    """SIGSTOP `pid`, at a moment it is inside a transaction if that happens within `attempts`
    tries (True), else just stopped (False)."""
    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        if await in_transaction(conn, pid):
            return True
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.002)
    os.kill(pid, signal.SIGSTOP)
    return False


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# Two-sided 95 % quantiles of Student's t, by degrees of freedom (1-30).
# fmt: off
_T95 = (
    12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23,
    2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.10, 2.09, 2.09,
    2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04,
)
# fmt: on


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom: from the table up
    to 30, then by the Cornish-Fisher expansion around the normal's (2.0395 at 31, within 0.001)."""
    if df <= len(_T95):
        return _T95[df - 1]
    z = statistics.NormalDist().inv_cdf(0.975)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


class RatioInterval(NamedTuple):
    """The geometric mean of paired ratios and its 95 % confidence interval."""

    mean: float
    low: float
    high: float


def ratio_interval(ratios: Sequence[float]) -> RatioInterval:
    """Paired ratios (each of two loads measured side by side) summed up: their geometric mean,
    and the 95 % confidence interval of it by Student's t on their logarithms — the host's drift
    between pairs is what spreads them, and a ratio of 0.8 is as far below 1 as 1.25 is above.
    NaN bounds for fewer than two ratios; all NaN when a ratio is 0 (a load that accepted nothing
    has no logarithm, and no interval would be true to it)."""
    if not ratios or any(not r > 0 for r in ratios):
        return RatioInterval(math.nan, math.nan, math.nan)
    logs = [math.log(r) for r in ratios]
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return RatioInterval(math.exp(centre), math.nan, math.nan)
    half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return RatioInterval(math.exp(centre), math.exp(centre - half), math.exp(centre + half))


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms, "
        f"mean {statistics.fmean(values) * 1000:.1f} ms (n={len(values)})"
    )


async def dispatcher_bus(nats_url: str) -> Bus:
    """A bus connected for a benchmark, with the dispatchers' consumer made: announcements published
    before a dispatcher starts wait in it, and `until_decided` asks it what is settled. Closed by
    the caller."""
    bus = Bus(nats_url, "bench")
    await bus.connect_forever()
    await bus.ensure_dispatcher_consumer(max_deliver=10)
    return bus


async def announcements_settled(bus: Bus) -> bool:
    """Whether the dispatchers' consumer has settled every announcement (none pending, none
    unacknowledged): a message is acked once its runs are decided. A probe that costs Postgres
    nothing — asked for undecided runs, with no index on their status (migration 0011), Postgres
    reads the status of every run still named by a batch: a load of its own on what is measured."""
    info = await bus.dispatcher_consumer_info()
    return not info.num_pending and not info.num_ack_pending


async def until_decided(bus: Bus, every: float = 0.05) -> None:
    """Wait until every run announced so far is decided (see announcements_settled): settled at
    two probes in a row, so that announcements still on their way to the stream (a publisher's
    buffer, the stream's own queue) are not taken for none."""
    settled = 0
    while settled < 2:
        settled = settled + 1 if await announcements_settled(bus) else 0
        if settled < 2:
            await asyncio.sleep(every)


async def assert_all_decided(conn: asyncpg.Connection, run_ids: Sequence[uuid.UUID]) -> None:
    """Confirm in Postgres, run by run (primary key), what the consumer's settling said."""
    left = await conn.fetchval(
        "SELECT count(*) FROM routine_runs WHERE id = ANY($1::uuid[]) AND status = 'received'", list(run_ids)
    )
    assert left == 0, f"{left} runs undecided after the consumer settled"


def service_env(stack: Stack, **extra: Any) -> dict[str, str]:
    env = stack.env(log_level="warning", **extra)
    env["ROUTINES_SHUTDOWN_TIMEOUT_SEC"] = "5"
    return env


def now() -> float:
    return time.time()


def cpu_count() -> int:
    return os.cpu_count() or 1
