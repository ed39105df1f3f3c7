"""NATS connection, JetStream streams and consumers, subject names, and header propagation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from shared.logging import REQUEST_ID, get_logger, redact_text, request_id_bound
from shared.settings import CommonSettings

log = get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"


class Subjects:
    """Every subject the services use."""

    RUNS_REQUESTED = "routines.runs.requested"
    RUNS_DISPATCHED = "routines.runs.dispatched"
    TRIGGERS_CHANGED = "routines.triggers.changed"
    ROUTINE_ALERTS = "routines.alerts"
    AGENT_WAKEUP_ALL = "agents.*.wakeup"

    @staticmethod
    def agent_wakeup(agent_id: str) -> str:
        return f"agents.{agent_id}.wakeup"


RUNS_STREAM = "ROUTINES_RUNS"
EVENTS_STREAM = "ROUTINES_EVENTS"
DISPATCHER_CONSUMER = "run-dispatcher"


def stream_configs(replicas: int = 1) -> tuple[StreamConfig, ...]:
    """The streams, at `replicas` copies each (R3 on a 3-node cluster: a server may die)."""
    return (
        # Work queue: each requested run is consumed by one dispatcher, then removed.
        StreamConfig(
            name=RUNS_STREAM,
            subjects=[Subjects.RUNS_REQUESTED],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
            max_age=7 * 24 * 3600.0,
            num_replicas=replicas,
        ),
        # Decisions and wake-ups, kept a day for agents that were offline.
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[Subjects.RUNS_DISPATCHED, Subjects.AGENT_WAKEUP_ALL, Subjects.ROUTINE_ALERTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=24 * 3600.0,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
    )


STREAMS = stream_configs(1)


def connect_options(settings: CommonSettings) -> dict[str, Any]:
    """nats.connect() keyword arguments for credentials and TLS from the settings."""
    options: dict[str, Any] = {}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_token is not None:
        options["token"] = settings.nats_token
    if settings.nats_creds_file is not None:
        options["user_credentials"] = settings.nats_creds_file
    if settings.nats_tls_ca_file or settings.nats_tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca_file)
        if settings.nats_tls_cert_file:
            context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
        options["tls"] = context
    return options


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


def trace_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current request id into the next service."""
    headers = dict(extra or {})
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def current_request_id() -> str | None:
    """The request id bound to this context's log lines, if any."""
    return REQUEST_ID.get() or None


def message_context(msg: Msg) -> contextlib.AbstractContextManager[object]:
    """The request id a message carries, bound to log lines for the duration of a `with` block
    (and unbound after it, so a long-lived consumer never carries a stale id)."""
    return request_context((msg.headers or {}).get(REQUEST_ID_HEADER))


def request_context(request_id: str | None) -> contextlib.AbstractContextManager[object]:
    """`request_id` bound to log lines and trace headers for a `with` block (None: nothing bound)."""
    if request_id:
        return request_id_bound(request_id)
    return contextlib.nullcontext()


class Bus:
    """One NATS connection that reconnects forever; connect() never blocks service start."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        replicas: int = 1,
        options: Mapping[str, Any] | None = None,
        warn_interval: float = 30.0,
    ) -> None:
        self._servers = [u.strip() for u in url.split(",") if u.strip()]
        self._name = name
        self._streams = stream_configs(replicas)
        self._options = dict(options or {})
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._streams_ready = False
        self._connected = asyncio.Event()
        self._closing = False
        self._outage = _OutageLog(warn_interval)

    @classmethod
    def from_settings(cls, settings: CommonSettings, name: str) -> Bus:
        return cls(
            settings.nats_url, name, replicas=settings.nats_stream_replicas, options=connect_options(settings)
        )

    @property
    def _core(self) -> NATS:
        if self._nc is None:
            raise nats.errors.ConnectionClosedError
        return self._nc

    @property
    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise nats.errors.ConnectionClosedError
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _on_error(self, exc: Exception) -> None:
        if self._closing:
            return
        self._outage.failed(redact_text(repr(exc)))

    async def _on_disconnected(self) -> None:
        if self._closing:
            log.debug("nats disconnected (closing)")
            return
        self._outage.begin()

    async def _on_reconnected(self) -> None:
        self._outage.end()
        self._streams_ready = False

    async def _on_closed(self) -> None:
        log.info("nats connection closed")

    async def connect_forever(self, stop: asyncio.Event | None = None) -> None:
        """Connect, retrying until it works (or `stop` is set); then nats-py reconnects by itself."""
        delay = 0.2
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    servers=self._servers,
                    name=self._name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                    **self._options,
                )
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                self._outage.failed(
                    redact_text(repr(exc)), first_event="nats connect failed; retrying in the background"
                )
                if stop is not None and stop.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._js = self._nc.jetstream(timeout=5)
        self._outage.end(event="nats connected")
        self._connected.set()
        # A cluster may still be electing its JetStream leader (or lack a quorum for R3):
        # keep trying; until then publishes fail quietly and the sweeper dispatches.
        delay = 0.5
        while True:
            try:
                await self.ensure_streams()
                return
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                log.warning("declaring streams failed, retrying", error=redact_text(repr(exc)), delay=delay)
                if stop is not None and stop.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ensure_streams(self) -> None:
        """Declare the streams idempotently (add, or update when the config changed)."""
        if self._streams_ready:
            return
        for config in self._streams:
            try:
                await self._jetstream.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Exists with another configuration (e.g. replicas raised from 1 to 3): update it.
                await self._jetstream.update_stream(config)
        self._streams_ready = True

    async def ensure_dispatcher_consumer(self, max_deliver: int, ack_wait: float = 30.0) -> None:
        config = ConsumerConfig(
            durable_name=DISPATCHER_CONSUMER,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=20_000,
            filter_subject=Subjects.RUNS_REQUESTED,
        )
        await self.ensure_streams()
        await self._jetstream.add_consumer(RUNS_STREAM, config)

    async def bind_dispatcher_consumer(self, max_deliver: int) -> JetStreamContext.PullSubscription:
        """Declare the dispatchers' durable consumer and pull from it."""
        await self.ensure_dispatcher_consumer(max_deliver)
        return await self._jetstream.pull_subscribe_bind(durable=DISPATCHER_CONSUMER, stream=RUNS_STREAM)

    async def dispatcher_consumer_info(self, timeout: float = 5.0) -> ConsumerInfo:
        """The dispatchers' consumer: what is pending and unacknowledged (metrics, tests)."""
        info: ConsumerInfo = await self._jetstream.consumer_info(
            RUNS_STREAM, DISPATCHER_CONSUMER, timeout=timeout
        )
        return info

    async def stream_info(self, name: str) -> StreamInfo:
        return await self._jetstream.stream_info(name)

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """A plain subscription calling `cb` for each message, in place at the server on return."""
        subscription = await self._core.subscribe(subject, cb=cb)
        await self.flush()
        return subscription

    async def flush(self) -> None:
        """Until the server has everything sent so far (and so has sent back what came before it)."""
        await self._core.flush()

    async def subscribe_agent_wakeups(
        self, agent_id: str, after: int | None
    ) -> JetStreamContext.PushSubscription:
        """An agent's wake-ups from the events stream: new ones, or every one after stream
        sequence `after` (a reconnecting agent's Last-Event-ID)."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after is not None else DeliverPolicy.NEW,
            opt_start_seq=after + 1 if after is not None else None,
        )
        return await self._jetstream.subscribe(
            Subjects.agent_wakeup(agent_id), stream=EVENTS_STREAM, ordered_consumer=True, config=config
        )

    async def publish(
        self, subject: str, payload: Mapping[str, Any] | bytes, *, msg_id: str | None = None
    ) -> None:
        """Publish with the request id in the headers, without waiting for a stream's ack (a
        stream still captures the subject; `msg_id` still de-duplicates there). `payload`: an
        object to encode as JSON, or JSON already encoded."""
        data = payload if isinstance(payload, bytes) else encode(payload)
        await self._core.publish(subject, data, headers=_headers(msg_id))

    async def publish_acked(
        self, subject: str, payload: Mapping[str, Any], *, msg_id: str | None = None, timeout: float = 2.0
    ) -> None:
        """Publish with the request id in the headers and wait for the stream's ack."""
        await self._jetstream.publish(subject, encode(payload), headers=_headers(msg_id), timeout=timeout)

    async def publish_quietly(
        self, subject: str, payload: Mapping[str, Any] | bytes, *, msg_id: str | None = None
    ) -> bool:
        """Publish (no ack awaited); on failure log and return False (Postgres stays the source of truth)."""
        if not self.is_connected:
            # Do not make callers wait out a publish timeout while NATS is away: the sweeper
            # dispatches from Postgres.
            log.debug("publish skipped; nats not connected", subject=subject)
            return False
        try:
            await self.publish(subject, payload, msg_id=msg_id)
            return True
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            log.warning("publish failed", subject=subject, error=redact_text(repr(exc)))
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Drain subscriptions and close; quietly, also when NATS is away (nothing to drain then)."""
        self._closing = True
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            try:
                await asyncio.wait_for(nc.drain(), timeout)
                return
            except (TimeoutError, nats.errors.Error, OSError, RuntimeError) as exc:
                log.info("nats drain incomplete; closing", error=redact_text(repr(exc)))
        try:
            await nc.close()
        except (nats.errors.Error, OSError, RuntimeError) as exc:
            # A connection caught mid-reconnect may already have lost its transport.
            log.debug("nats close after failed reconnect", error=redact_text(repr(exc)))


def _headers(msg_id: str | None) -> dict[str, str]:
    return trace_headers({"Nats-Msg-Id": msg_id} if msg_id else None)


class _OutageLog:
    """Logs a NATS outage without flooding: one warning when it starts, then at most one per
    `interval` with the number of failed attempts since the last line, and one line at the end."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.down_since: float | None = None
        self.last_warned = 0.0
        self.failures = 0

    def begin(self) -> None:
        if self.down_since is None:
            self.down_since = self.last_warned = time.monotonic()
            self.failures = 0
            log.warning("nats connection lost; reconnecting in the background")

    def failed(
        self, error: str, first_event: str = "nats connection lost; reconnecting in the background"
    ) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.down_since is None:
            self.down_since = self.last_warned = now
            self.failures = 0
            log.warning(first_event, error=error)
        elif now - self.last_warned >= self.interval:
            log.warning(
                "nats still unreachable",
                error=error,
                failed_attempts=self.failures,
                down_sec=round(now - self.down_since, 1),
            )
            self.last_warned = now
            self.failures = 0

    def end(self, event: str = "nats reconnected") -> None:
        if self.down_since is None:
            log.info(event)
            return
        log.info(event, down_sec=round(time.monotonic() - self.down_since, 1))
        self.down_since = None
        self.failures = 0
