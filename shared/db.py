"""asyncpg pool with codecs and timeouts, named SQL queries, and driver-error translation."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, cast

import asyncpg

from shared.errors import ServiceUnavailable
from shared.logging import get_logger
from shared.migrate import SchemaTooOld, check_schema
from shared.settings import CommonSettings

log = get_logger(__name__)

_QUERY_HEADER = re.compile(r"^-- ([a-z0-9_]+) --\n(?:-- .*\n)*", re.MULTILINE)

# Errors after which the same work may succeed if tried again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# What a worker loop logs and retries on its next round (dependency down or busy).
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (ServiceUnavailable, *TRANSIENT_ERRORS)
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *TRANSIENT_ERRORS)
_PING_ERRORS: tuple[type[BaseException], ...] = (ServiceUnavailable, TimeoutError, *TRANSIENT_ERRORS)


def load_queries(package: str, *filenames: str) -> dict[str, str]:
    """Load named queries (`-- name --` followed by comment lines, then SQL) from a package's
    files (`queries.sql` unless named). A name defined twice is refused: one name, one query."""
    queries: dict[str, str] = {}
    for filename in filenames or ("queries.sql",):
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        matches = list(_QUERY_HEADER.finditer(text))
        if not matches:
            raise ValueError(f"no queries found in {package}/{filename}")
        for index, match in enumerate(matches):
            if match.group(1) in queries:
                raise ValueError(f"query {match.group(1)!r} defined twice in {package}")
            end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
            queries[match.group(1)] = text[match.end() : end].strip().rstrip(";")
    return queries


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON and JSONB columns as Python values."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without the default reset query (UNLISTEN, RESET ALL, …): one round trip saved per
    acquire. Safe because no code here changes session state; asyncpg still rolls back an open
    transaction before this runs."""


def session_settings(settings: CommonSettings) -> dict[str, str]:
    """The per-session timeouts the services rely on."""
    return {
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "lock_timeout": str(settings.db_lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
    }


def pool_arguments(settings: CommonSettings, application_name: str) -> dict[str, Any]:
    """asyncpg pool options for the configured pooler mode.

    Direct or session pooling: the timeouts travel as startup parameters and asyncpg caches
    prepared statements per connection. Transaction pooling (PgBouncer `pool_mode=transaction`):
    consecutive transactions of one client connection run on different server connections, so
    - startup parameters are not sent (PgBouncer refuses unknown ones, and could not keep them
      per client anyway); the same timeouts are role defaults (`ALTER ROLE ... SET`, applied by
      migration 0006 to the service roles) that every server connection gets when it logs in;
    - asyncpg's named prepared-statement cache is off (`statement_cache_size=0`): a statement
      prepared on one server connection does not exist on the next one. asyncpg then uses the
      unnamed statement, parsed and executed within one protocol exchange."""
    s = settings
    server_settings = {"application_name": application_name}
    options: dict[str, Any] = {}
    if s.db_pooler_mode == "transaction":
        options["statement_cache_size"] = 0
    else:
        server_settings.update(session_settings(s))
    return {
        "min_size": min(s.db_pool_min, s.db_pool_max),
        "max_size": s.db_pool_max,
        "init": init_connection,
        "reset": _keep_session,
        "timeout": s.db_acquire_timeout_sec,
        "command_timeout": s.db_statement_timeout_ms / 1000 + 5,
        "max_inactive_connection_lifetime": 120,
        "server_settings": server_settings,
        **options,
    }


class Database:
    """The service's Postgres pool. Connection problems surface as `ServiceUnavailable`."""

    def __init__(self, settings: CommonSettings, application_name: str) -> None:
        self._settings = settings
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._schema_ok = False

    async def open(self) -> None:
        self._pool = asyncpg.create_pool(
            self._settings.database_url, **pool_arguments(self._settings, self._application_name)
        )
        await self._pool
        await self._verify_schema(at_start=True)

    async def _verify_schema(self, at_start: bool = False) -> bool:
        """Refuse a schema older than this release. At start a Postgres that cannot be reached
        defers the check to readiness (/readyz stays failing until it passes)."""
        if self._schema_ok:
            return True
        try:
            async with asyncio.timeout(self._settings.db_acquire_timeout_sec + 2), self.connection() as conn:
                await check_schema(conn)
        except SchemaTooOld as exc:
            log.error("schema too old", error=exc.message)
            if at_start:
                raise
            return False
        except _PING_ERRORS as exc:
            if at_start:
                log.warning("schema check deferred: database unavailable", error=repr(exc))
            return False
        self._schema_ok = True
        return True

    def pool_stats(self) -> tuple[int, int]:
        """(connections in use, connections open) of the pool, for metrics."""
        if self._pool is None:
            return 0, 0
        size = self._pool.get_size()
        return size - self._pool.get_idle_size(), size

    async def close(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=5)
            except _CLOSE_ERRORS:
                self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database not opened")
        return self._pool

    @property
    def saturated(self) -> bool:
        """Every connection the pool may open is open and in use: load, not an outage."""
        pool = self.pool
        return pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Acquire a connection; failing to get one within the timeout is a 503."""
        try:
            conn = await self.pool.acquire(timeout=self._settings.db_acquire_timeout_sec)
        except TRANSIENT_ERRORS as exc:
            if isinstance(exc, TimeoutError) and self.saturated:
                raise ServiceUnavailable("database busy, retry later") from exc
            raise ServiceUnavailable("database unavailable") from exc
        try:
            yield cast(asyncpg.Connection, conn)
        except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
            raise ServiceUnavailable("database busy, retry later") from exc
        except asyncpg.InternalClientError as exc:
            # A connection Postgres terminated (pg_terminate_backend, failover) can surface as a
            # protocol-state error instead of a connection error: discard it, like any lost one.
            conn.terminate()
            raise ServiceUnavailable("database unavailable") from exc
        except TRANSIENT_ERRORS as exc:
            raise ServiceUnavailable("database unavailable") from exc
        finally:
            try:
                await self.pool.release(conn, timeout=5)
            except TRANSIENT_ERRORS:
                conn.terminate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction, committed when the block ends without error."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when Postgres answers a trivial query within `timeout`."""
        if not self._schema_ok and not await self._verify_schema():
            return False
        try:
            async with asyncio.timeout(timeout), self.connection() as conn:
                await conn.fetchval("SELECT 1")
            return True
        except _PING_ERRORS:
            return False
