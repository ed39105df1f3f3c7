"""Platform metrics every service exports, and the separate metrics port.

Read at scrape time: `routines_build_info`, `routines_db_pool_connections{state=in_use|open}`,
`routines_db_pool_max`, `routines_nats_connected`. Refreshed by a background loop in the
run-dispatcher (one query and one JetStream call every `ROUTINES_METRICS_REFRESH_SEC`):
`routines_runs_received` and `routines_runs_received_oldest_seconds` (runs not yet decided),
`routines_nats_consumer_pending{consumer}` (JetStream messages not yet delivered or acked)."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator, Iterable
from importlib import metadata

import nats.errors
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.appkeys import BUS_KEY, DB_KEY
from shared.bus import DISPATCHER_CONSUMER, Bus
from shared.db import RETRYABLE_ERRORS, Database
from shared.lifecycle import SUPERVISOR_KEY, Supervisor, sleep_unless_stopped
from shared.logging import get_logger
from shared.settings import CommonSettings

log = get_logger(__name__)

RUNS_RECEIVED = Gauge("routines_runs_received", "Runs recorded and not yet decided (status received)")
RUNS_RECEIVED_OLDEST = Gauge(
    "routines_runs_received_oldest_seconds", "Age of the oldest run still received (0 when none)"
)
CONSUMER_PENDING = Gauge(
    "routines_nats_consumer_pending",
    "JetStream messages of the consumer not yet delivered, plus delivered and not yet acked",
    ["consumer"],
)


def build_version() -> str:
    try:
        return metadata.version("routines")
    except metadata.PackageNotFoundError:
        return "unknown"


class PlatformCollector(Collector):
    """Pool and NATS state of this process's service, read when Prometheus scrapes."""

    def __init__(self, service: str, db: Database, bus: Bus, pool_max: int) -> None:
        self._service = service
        self._db = db
        self._bus = bus
        self._pool_max = pool_max

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "routines_build_info",
            "Build of the running service (value 1)",
            labels=["service", "version", "python"],
        )
        info.add_metric([self._service, build_version(), platform.python_version()], 1)
        yield info
        in_use, size = self._db.pool_stats()
        pool = GaugeMetricFamily(
            "routines_db_pool_connections", "Postgres pool connections by state", labels=["state"]
        )
        pool.add_metric(["in_use"], in_use)
        pool.add_metric(["open"], size)
        yield pool
        yield GaugeMetricFamily("routines_db_pool_max", "Postgres pool size limit", value=self._pool_max)
        yield GaugeMetricFamily(
            "routines_nats_connected", "1 while connected to NATS", value=1 if self._bus.is_connected else 0
        )


_collector: PlatformCollector | None = None


def install(app: web.Application, service: str, settings: CommonSettings) -> None:
    """Register the platform metrics for this app, and the metrics port when one is configured."""
    global _collector
    if _collector is not None:  # one app per process in production; tests build several
        REGISTRY.unregister(_collector)
    _collector = PlatformCollector(service, app[DB_KEY], app[BUS_KEY], settings.db_pool_max)
    REGISTRY.register(_collector)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        runner = None
        if settings.metrics_port:
            runner = await _serve_metrics(settings.http_host, settings.metrics_port)
        if service == "run-dispatcher":
            supervisor: Supervisor = app[SUPERVISOR_KEY]
            supervisor.spawn(
                "pipeline-metrics",
                _refresh(app[DB_KEY], app[BUS_KEY], supervisor, settings.metrics_refresh_sec),
                critical=False,
            )
        yield
        if runner is not None:
            await runner.cleanup()

    app.cleanup_ctx.append(ctx)


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _serve_metrics(host: str, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("metrics listening", host=host, port=port)
    return runner


UNDECIDED_RUNS = """
SELECT COALESCE(sum(r.n), 0)::bigint AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(r.oldest)), 0) AS oldest
FROM received_batches b,
     LATERAL (SELECT count(*) AS n, min(triggered_at) AS oldest FROM routine_runs
              WHERE id = ANY(b.run_ids) AND status = 'received') AS r
"""
"""How many runs are undecided, and the age of the oldest: every one is named by a batch of
received runs (migration 0010), and only those are looked up, by primary key. The aggregate in
the LATERAL keeps it a probe per batch: as a plain subquery it would be flattened into a join,
and planned, by statistics taken while nothing was undecided, as a scan of the runs."""


async def _refresh(db: Database, bus: Bus, supervisor: Supervisor, every: float) -> None:
    while not supervisor.stopping.is_set():
        try:
            async with db.connection() as conn:
                row = await conn.fetchrow(UNDECIDED_RUNS)
            assert row is not None  # an aggregate always answers one row
            RUNS_RECEIVED.set(row["n"])
            RUNS_RECEIVED_OLDEST.set(float(row["oldest"]))
        except RETRYABLE_ERRORS as exc:
            log.debug("runs metrics not refreshed", error=repr(exc))
        if bus.is_connected:
            try:
                info = await bus.dispatcher_consumer_info(timeout=2)
                CONSUMER_PENDING.labels(DISPATCHER_CONSUMER).set(
                    (info.num_pending or 0) + (info.num_ack_pending or 0)
                )
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                log.debug("consumer metrics not refreshed", error=repr(exc))
        await sleep_unless_stopped(supervisor.stopping, every)
