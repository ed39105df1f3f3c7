"""Configuration from `ROUTINES_*` environment variables, validated once at start."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

LogFormat = Literal["auto", "json", "console"]
PoolerMode = Literal["none", "session", "transaction"]
SECRETS_DIR_ENV = "ROUTINES_SECRETS_DIR"


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="ROUTINES_", extra="ignore", frozen=True)

    database_url: str = Field(description="Postgres DSN (postgresql://user:pass@host:port/db).")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: LogFormat = Field("auto", description="json off a TTY, console on one, unless set.")
    access_log: Literal["all", "errors", "off"] = Field(
        "all", description="Access log lines: every request, only answers >= 400, or none."
    )
    http_host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    http_backlog: int = Field(
        2048,
        ge=1,
        le=65535,
        description="Connections the kernel completes and holds while the service is busy (listen "
        "backlog; capped by net.core.somaxconn). Past it new connections wait 1-31 s on SYN retries.",
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest accepted request body.")
    header_timeout_sec: float = Field(
        10.0, gt=0, description="A connection must deliver a request's headers within this (else closed)."
    )
    body_timeout_sec: float = Field(
        30.0, gt=0, description="A request body must arrive within this (else 408)."
    )
    json_max_depth: int = Field(64, ge=2, le=200, description="Deepest JSON nesting accepted.")
    db_pool_min: int = Field(0, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_acquire_timeout_sec: float = Field(3.0, gt=0)
    db_statement_timeout_ms: int = Field(15_000, ge=100)
    db_lock_timeout_ms: int = Field(5_000, ge=10)
    db_idle_in_transaction_timeout_ms: int = Field(30_000, ge=100)
    shutdown_timeout_sec: float = Field(10.0, gt=0, description="Time allowed to finish work.")
    # --- production: pooler, NATS cluster/auth/TLS, metrics port (docs/operations.md) ---
    db_pooler_mode: PoolerMode = Field(
        "none",
        description="`transaction` behind PgBouncer in transaction pooling: no startup parameters "
        "(timeouts come from ALTER ROLE, migration 0006) and no prepared-statement cache.",
    )
    nats_stream_replicas: int = Field(
        1, ge=1, le=5, description="JetStream stream replicas (R3 in production)."
    )
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds_file: str | None = Field(None, description="NATS .creds file (JWT + nkey seed).")
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Separate port for /metrics; 0 serves it on the HTTP port."
    )
    metrics_refresh_sec: float = Field(
        10.0,
        gt=0,
        description="How often the dispatcher refreshes runs-received and consumer-pending gauges.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str) -> str:
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value


def _decode_key(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be base64 of 32 random bytes") from exc
    if len(raw) != 32:
        raise ValueError("must be base64 of exactly 32 bytes (AES-256 key)")
    return value


class SecretKeySettings(CommonSettings):
    """Settings of services that decrypt webhook secrets."""

    secret_key: str = Field(
        description="Key ring: base64 AES-256 keys, comma separated; the first encrypts webhook "
        "secrets at rest, every one decrypts (one key is a ring of one)."
    )

    @field_validator("secret_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        keys = [k.strip() for k in value.split(",") if k.strip()]
        if not keys:
            raise ValueError("must be base64 of 32 random bytes")
        for key in keys:
            _decode_key(key)
        return ",".join(keys)


class ApiSettings(SecretKeySettings):
    """Settings of the API service."""

    http_port: int = Field(8080, ge=0, le=65535)
    public_gateway_url: str = Field(
        "http://127.0.0.1:8081", description="Public base URL of the webhook gateway."
    )
    manual_run_wait_sec: float = Field(2.0, ge=0, le=30)
    secret_rotations_per_min: int = Field(
        10, ge=1, le=1000, description="Secret rotations per webhook per minute."
    )
    list_payload_max_bytes: int = Field(
        16 * 1024, ge=0, description="Payloads larger than this are left out of list answers."
    )
    # Per-company quotas (docs/api.md "Quotas"): creating one more answers 422.
    quota_routines_per_company: int = Field(1000, ge=1, description="Routines, archived ones excepted.")
    quota_triggers_per_routine: int = Field(20, ge=1)
    quota_webhook_triggers_per_company: int = Field(200, ge=1)
    quota_agents_per_company: int = Field(500, ge=1, description="Agents, terminated ones excepted.")
    quota_board_tokens_per_company: int = Field(50, ge=1, description="Live (unrevoked) board tokens.")
    quota_projects_per_company: int = Field(1000, ge=1)
    quota_goals_per_company: int = Field(1000, ge=1)
    backfill_max_runs: int = Field(
        100, ge=1, le=10_000, description="Hard limit on the runs one backfill call may record."
    )
    console_session_ttl_sec: float = Field(
        8 * 3600, ge=60, le=30 * 86400, description="How long a board console sign-in lasts."
    )
    sse_heartbeat_sec: float = Field(
        15.0, gt=0, le=300, description="Idle time after which a wake-up stream sends a ping comment."
    )


class GatewaySettings(SecretKeySettings):
    """Settings of the webhook gateway."""

    http_port: int = Field(8081, ge=0, le=65535)
    webhook_max_body_bytes: int = Field(256 * 1024, ge=1024)
    rate_limit_trigger_per_sec: float = Field(200.0, gt=0)
    rate_limit_trigger_burst: int = Field(400, ge=1)
    rate_limit_client_per_sec: float = Field(500.0, gt=0)
    rate_limit_client_burst: int = Field(1000, ge=1)
    rate_limit_failed_per_sec: float = Field(
        5.0,
        gt=0,
        description="Failed attempts: failed signatures per client address and webhook, unknown "
        "webhook URLs per client address (buckets of their own).",
    )
    rate_limit_failed_burst: int = Field(50, ge=1)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed."
    )
    trigger_cache_ttl_sec: float = Field(5.0, ge=0)
    trigger_cache_negative_ttl_sec: float = Field(
        5.0, ge=0, description="How long an unknown publicId is remembered as unknown (dropped on changes)."
    )
    trigger_lookups_per_sec: float = Field(
        500.0,
        gt=0,
        description="Database lookups of publicIds the trigger cache does not know, per gateway "
        "process: a flood of random webhook URLs cannot become a flood of queries.",
    )
    trigger_lookups_burst: int = Field(1000, ge=1)
    group_commit_max: int = Field(256, ge=1)
    group_commit_writers: int = Field(
        2,
        ge=1,
        le=32,
        description="Concurrent group-commit transactions. Two: one batch is sent while the other waits"
        " for its commit, and batches stay large (each INSERT has a fixed cost; docs/benchmarks.md §8).",
    )


class SchedulerSettings(CommonSettings):
    """Settings of the scheduler."""

    http_port: int = Field(8082, ge=0, le=65535)
    # The longest sleep between looks at the due triggers. The scheduler wakes at the earliest
    # slot (database clock) or on a trigger change; this bounds it when a change was not announced.
    tick_interval_sec: float = Field(1.0, gt=0)
    misfire_grace_sec: int = Field(60, ge=0)
    claim_batch_size: int = Field(1000, ge=1, le=10_000)
    # Claim transactions run at once when many triggers are due (each takes a pool connection).
    claim_concurrency: int = Field(2, ge=1, le=8)
    # How long before a slot its runs are recorded and, as far as time allows, decided, in
    # transactions committed at the slot (0: at the slot). A trigger being prepared, and the
    # routine of a run decided ahead, are locked until then: an edit of them (API, console, an
    # auto-pause) waits at most this long, so every service's lock timeout must exceed it. Two
    # seconds decide 10,000 routines due at one slot ahead on two busy cores (docs/benchmarks.md).
    prepare_ahead_sec: float = Field(2.0, ge=0, le=5)


class DispatcherSettings(CommonSettings):
    """Settings of the run dispatcher."""

    http_port: int = Field(8083, ge=0, le=65535)
    fetch_batch_size: int = Field(500, ge=1, le=5000)
    # Batches decided at once by one process (each holds a pool connection while it decides).
    decide_concurrency: int = Field(3, ge=1, le=16)
    # While runs stream in faster than fetch_linger_above_per_sec, wait this long before each
    # fetch, so that one transaction decides what arrives meanwhile (0: never wait). Measured at
    # 2,500 runs/s: 50 ms gave 122 runs a transaction and ~100 µs of CPU a decision, 150 ms gave
    # ~300 and ~68 µs; 200 and 300 ms did no better (docs/benchmarks.md §8).
    fetch_linger_ms: float = Field(150.0, ge=0, le=1000)
    fetch_linger_above_per_sec: float = Field(1000.0, ge=0)
    sweep_interval_sec: float = Field(2.0, gt=0)
    sweep_after_sec: float = Field(5.0, ge=0)
    max_deliver: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _pool_fits_the_batches(self) -> DispatcherSettings:
        if self.decide_concurrency >= self.db_pool_max:
            raise ValueError(
                f"ROUTINES_DECIDE_CONCURRENCY ({self.decide_concurrency}) must be below "
                f"ROUTINES_DB_POOL_MAX ({self.db_pool_max}): each batch decided at once holds a "
                "connection, and the sweeper needs one too"
            )
        return self


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment, or raise one error naming every bad variable."""
    try:
        return cls(**_secrets_dir_argument())
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "ROUTINES_" + "_".join(str(p) for p in error["loc"]).upper() if error["loc"] else "config"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


def _secrets_dir_argument() -> dict[str, Any]:
    """Settings may also come from files (a mounted Secret): `$ROUTINES_SECRETS_DIR/routines_<name>`
    (case-insensitive, e.g. `ROUTINES_DATABASE_URL`). Environment variables win over files."""
    folder = os.environ.get(SECRETS_DIR_ENV)
    if not folder:
        return {}
    if not Path(folder).is_dir():
        raise ConfigurationError(f"invalid configuration: {SECRETS_DIR_ENV}: {folder} is not a directory")
    return {"_secrets_dir": folder}
