"""Configuration from `ROUTINES_*` environment variables, validated once at start."""

from __future__ import annotations

import base64
import binascii
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

LogFormat = Literal["auto", "json", "console"]


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
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest accepted request body.")
    json_max_depth: int = Field(64, ge=2, le=200, description="Deepest JSON nesting accepted.")
    db_pool_min: int = Field(0, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_acquire_timeout_sec: float = Field(3.0, gt=0)
    db_statement_timeout_ms: int = Field(15_000, ge=100)
    db_lock_timeout_ms: int = Field(5_000, ge=10)
    db_idle_in_transaction_timeout_ms: int = Field(30_000, ge=100)
    shutdown_timeout_sec: float = Field(10.0, gt=0, description="Time allowed to finish work.")

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

    secret_key: str = Field(description="Base64 AES-256 key that encrypts webhook secrets at rest.")

    @field_validator("secret_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        return _decode_key(value)


class ApiSettings(SecretKeySettings):
    """Settings of the API service."""

    http_port: int = Field(8080, ge=0, le=65535)
    public_gateway_url: str = Field(
        "http://127.0.0.1:8081", description="Public base URL of the webhook gateway."
    )
    manual_run_wait_sec: float = Field(2.0, ge=0, le=30)


class GatewaySettings(SecretKeySettings):
    """Settings of the webhook gateway."""

    http_port: int = Field(8081, ge=0, le=65535)
    webhook_max_body_bytes: int = Field(256 * 1024, ge=1024)
    rate_limit_trigger_per_sec: float = Field(200.0, gt=0)
    rate_limit_trigger_burst: int = Field(400, ge=1)
    rate_limit_client_per_sec: float = Field(500.0, gt=0)
    rate_limit_client_burst: int = Field(1000, ge=1)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed."
    )
    trigger_cache_ttl_sec: float = Field(5.0, ge=0)
    group_commit_max: int = Field(256, ge=1)
    group_commit_writers: int = Field(4, ge=1, le=32, description="Concurrent group-commit transactions.")


class SchedulerSettings(CommonSettings):
    """Settings of the scheduler."""

    http_port: int = Field(8082, ge=0, le=65535)
    tick_interval_sec: float = Field(1.0, gt=0)
    misfire_grace_sec: int = Field(60, ge=0)
    claim_batch_size: int = Field(1000, ge=1, le=10_000)


class DispatcherSettings(CommonSettings):
    """Settings of the run dispatcher."""

    http_port: int = Field(8083, ge=0, le=65535)
    fetch_batch_size: int = Field(500, ge=1, le=5000)
    sweep_interval_sec: float = Field(2.0, gt=0)
    sweep_after_sec: float = Field(5.0, ge=0)
    max_deliver: int = Field(10, ge=1)


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment, or raise one error naming every bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "ROUTINES_" + "_".join(str(p) for p in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
