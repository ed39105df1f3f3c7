"""The HTTP skeleton every service shares: request ids, JSON errors, access log, health, metrics."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from shared import metrics as platform_metrics
from shared.appkeys import BUS_KEY as BUS_KEY
from shared.appkeys import DB_KEY as DB_KEY
from shared.appkeys import SETTINGS_KEY as SETTINGS_KEY
from shared.bus import REQUEST_ID_HEADER, Bus
from shared.db import Database
from shared.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    RoutinesError,
    UnsupportedMediaType,
)
from shared.fastpath import FastRequest, JsonAnswer
from shared.lifecycle import HANDLER_ARGS_KEY, Supervisor
from shared.lifecycle import SUPERVISOR_KEY as SUPERVISOR_KEY
from shared.logging import REQUEST_ID, get_logger
from shared.loop_metrics import LoopCounter, LoopHistogram
from shared.protocol import hide_server_banner, install_protocol_handling
from shared.settings import CommonSettings

log = get_logger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")

HTTP_REQUESTS = LoopCounter(
    "routines_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
DEPENDENCY_UP = Gauge(
    "routines_dependency_up",
    "1 when the dependency answered at the last readiness check, else 0 (nats 0 = degraded)",
    ["dependency"],
)
HTTP_LATENCY = LoopHistogram(
    "routines_http_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


# Methods counted by name; any other is "other". aiohttp's C parser (llhttp) lets only HTTP's
# registered methods through, but its pure-Python parser (no C extension) takes any token, and a
# client making them up must not grow the metrics. Routes are the app's own, statuses few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(route: str, method: str, status: int, elapsed: float) -> None:
    method = method if method in _METHODS else "other"
    HTTP_REQUESTS.inc(route, method, str(status))
    HTTP_LATENCY.observe(elapsed, route, method)


def error_response(
    status: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    """The one error shape: {"error": ..., "details": ...}."""
    return _json_answer(_error_json(message, details), status, headers)


def _error_json(message: str, details: Any) -> bytes:
    return _error_body(message) if details is None else json_bytes({"error": message, "details": details})


_JSON_TYPE = "application/json; charset=utf-8"


def _json_answer(body: bytes, status: int, headers: dict[str, str] | None) -> web.Response:
    return web.Response(body=body, status=status, headers={hdrs.CONTENT_TYPE: _JSON_TYPE, **(headers or {})})


def raw_json_response(body: bytes, status: int = 200) -> web.Response:
    """An answer whose JSON body is already encoded (the same headers as json_response's)."""
    return _json_answer(body, status, None)


def json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()


@functools.lru_cache(maxsize=1024)
def _error_body(message: str) -> bytes:
    """The body of a detail-less error, encoded once per message: refusals (404, 401) are what a
    flood is made of, and each should cost as little as possible."""
    return json_bytes({"error": message, "details": None})


@functools.lru_cache(maxsize=256)
def _rate_limited_body(message: str, retry_after: int) -> bytes:
    """A 429's body, once per message and wait (a cache of its own: 404s naming a flood of
    unknown paths must not push these out)."""
    return json_bytes({"error": message, "details": {"retryAfterSec": retry_after}})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


_QUIET_ROUTES = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The HTTP edge, in one layer: request id bound for every log line, every failure as a JSON
    error (never HTML, never a traceback), then metrics and the access log line. (A service's fast
    route has the same edge: `fast_edge`.)"""
    request_id = _request_id(request.headers.get(REQUEST_ID_HEADER, ""))
    started = time.perf_counter()
    status = 500  # if the client goes away mid-request, that is how it is counted
    try:
        try:
            response = _refuse_encoded_body(request) or await handler(request)
        except Exception as exc:  # the edge turns everything into a JSON answer
            response = _error_for(request, exc)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        app = request.app
        _account(
            app[SETTINGS_KEY].access_log,
            app.get(REFUSAL_LINES_KEY),
            _route_name(request),
            request.method,
            request.path,
            status,
            started,
        )


def _request_id(incoming: str) -> str:
    """The request's id, on every log line until `_account`: the client's if it is safe to log,
    else a new random one."""
    request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else _IDS.new()
    REQUEST_ID.set(request_id)
    return request_id


class _RandomIds:
    """New request ids: 128 random bits each, as 32 hex digits — unguessable, so no client can
    send the id the next request will be given — cut from one read of the kernel's random
    source per 256 ids (a read per request cost more than the rest of the id's handling)."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)  # a child must not repeat its parent's

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def new(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return self._pool[at : at + 16].hex()


_IDS = _RandomIds()


def _account(
    access_log: str,
    lines: RefusalLines | None,
    route: str,
    method: str,
    path: str,
    status: int,
    started: float,
) -> None:
    """An answered request's metrics and access line; its request id unbound."""
    elapsed = time.perf_counter() - started
    _observe(route, method, status, elapsed)
    if _wants_access_line(access_log, route, status):
        suppressed = lines.admit(route) if status == 429 and lines is not None else 0
        if suppressed is not None:
            log.info(
                "request",
                method=method,
                path=path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                **({"suppressed": suppressed} if suppressed else {}),
            )
    REQUEST_ID.set(None)


def fast_edge(
    app: web.Application, route: str, handle: Callable[[FastRequest], Awaitable[JsonAnswer]]
) -> Callable[[FastRequest], Awaitable[JsonAnswer]]:
    """`handle` behind the edge of `edge_middleware`, for a route the fast path serves (`route`
    is its name in the metrics): request id, every failure a JSON answer, metrics, access line."""

    access_log, lines = app[SETTINGS_KEY].access_log, app[REFUSAL_LINES_KEY]

    async def served(request: FastRequest) -> JsonAnswer:
        request_id = _request_id(request.headers.get(REQUEST_ID_HEADER, ""))
        started = time.perf_counter()
        status = 500
        try:
            try:
                answer = await handle(request)
            except RoutinesError as exc:
                answer = error_answer(exc)
            except Exception:
                log.exception("unhandled error")
                answer = JsonAnswer(500, _error_body("internal error"))
            status = answer.status
            headers = (
                {**answer.headers, REQUEST_ID_HEADER: request_id}
                if answer.headers
                else {REQUEST_ID_HEADER: request_id}
            )
            return JsonAnswer(status, answer.body, headers, answer.close)
        finally:
            _account(access_log, lines, route, "POST", request.path, status, started)

    return served


def _refuse_encoded_body(request: web.Request) -> web.Response | None:
    """Bodies are taken as sent, never decompressed: a signature is over the bytes on the wire,
    size limits hold for what is stored, and a body merely labelled gzip cannot fail in the
    decompressor (it was a 500). Every Content-Encoding header counts (the parser heeds the last
    one). The connection is closed after the answer, so the rest of the body is never read."""
    encodings = [e.strip().lower() for e in request.headers.getall(hdrs.CONTENT_ENCODING, [])]
    if all(e in ("", "identity") for e in encodings) or not request.body_exists:
        return None
    received = ", ".join(encodings)[:100]
    response = routines_error_response(
        UnsupportedMediaType(
            f"Content-Encoding {received} is not supported; send the body uncompressed",
            {"received": received, "expected": "identity"},
        )
    )
    response.force_close()
    return response


class RefusalLines:
    """Access lines of 429 answers, at most `per_sec` a second per route (a token bucket): a flood
    of rate-limited requests is a line now and then saying how many were left out before it
    (`suppressed`), not a line each — writing one costs a fifth of refusing the request, and the
    logs must not be what a flood fills. The metrics still count every answer."""

    def __init__(self, per_sec: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_sec = per_sec
        self._clock = clock
        self._routes: dict[str, tuple[float, float, int]] = {}  # tokens, as of, left out since

    def admit(self, route: str) -> int | None:
        """None: leave this line out; otherwise write it, noting how many were left out before it."""
        now = self._clock()
        tokens, then, left_out = self._routes.get(route, (self._per_sec, now, 0))
        tokens = min(self._per_sec, tokens + (now - then) * self._per_sec)
        if tokens < 1:
            self._routes[route] = (tokens, now, left_out + 1)
            return None
        self._routes[route] = (tokens - 1, now, 0)
        return left_out


REFUSAL_LINES_KEY = web.AppKey("refusal_lines", RefusalLines)


def _wants_access_line(mode: str, route: str, status: int) -> bool:
    if mode == "off" or route in _QUIET_ROUTES:
        return False
    return mode == "all" or status >= 400


def error_answer(exc: RoutinesError) -> JsonAnswer:
    """The answer to one of our errors: its status, message and details, and the header it calls
    for (`Retry-After` on 429, `Allow` on 405)."""
    if isinstance(exc, RateLimited):  # its details are the wait: the body comes from the cache
        return JsonAnswer(
            429, _rate_limited_body(exc.message, exc.retry_after), {"Retry-After": str(exc.retry_after)}
        )
    headers = {"Allow": ",".join(exc.allowed)} if isinstance(exc, MethodNotAllowed) else None
    if exc.status >= 500:
        log.warning("request failed", status=exc.status, error=exc.message)
    # After a 408 the rest of the body is not worth waiting for: the connection is closed.
    body = _error_json(exc.message, exc.details)
    return JsonAnswer(exc.status, body, headers, close=isinstance(exc, RequestTimeout))


def answer_response(answer: JsonAnswer) -> web.Response:
    """A JSON answer as aiohttp's response."""
    response = _json_answer(answer.body, answer.status, answer.headers)
    if answer.close:
        response.force_close()
    return response


def routines_error_response(exc: RoutinesError) -> web.Response:
    """The answer to one of our errors (`error_answer`) as aiohttp's response."""
    return answer_response(error_answer(exc))


def _error_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, RoutinesError):
        return routines_error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return exc  # redirects and the like pass through as they are
        messages = {
            404: f"no route for {request.method} {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
            413: "request body too large",
        }
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, messages.get(exc.status, exc.reason), None, headers)
    log.exception("unhandled error")
    return error_response(500, "internal error")


def body_timeout(seconds: float) -> RequestTimeout:
    """The 408 of a body that did not arrive within `seconds` (the connection is closed after it)."""
    return RequestTimeout(f"request body not received within {seconds:g} s", {"bodyTimeoutSec": seconds})


async def read_within_body_timeout(request: web.Request, read: Awaitable[T]) -> T:
    """`read` (of the request's body) within BODY_TIMEOUT_SEC, else the 408."""
    timeout = request.app[SETTINGS_KEY].body_timeout_sec
    try:
        return await asyncio.wait_for(read, timeout)
    except TimeoutError:
        raise body_timeout(timeout) from None


async def read_json(request: web.Request) -> Any:
    """Parse a JSON body, with 413/415/400 as JSON errors."""
    limit = request.app[SETTINGS_KEY].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    if request.body_exists and request.content_type not in ("application/json", ""):
        received = request.headers.get("Content-Type", "")[:100]
        raise UnsupportedMediaType(
            f"request body must be application/json, got {received}; "
            "send the header Content-Type: application/json",
            {"received": received, "expected": "application/json"},
        )
    try:
        raw = await read_within_body_timeout(request, request.read())
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes") from exc
    if not raw.strip():
        return {}
    return parse_json(raw, request.app[SETTINGS_KEY].json_max_depth)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range (not a finite double)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate object key {key[:40]!r}")
            seen.add(key)
    return obj


def _check_storable(value: Any, max_depth: int) -> None:
    """Postgres jsonb cannot hold NUL characters or unpaired surrogates, and deep nesting breaks
    re-encoding downstream: refuse them at the edge."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")  # fails on unpaired surrogates, at C speed
            except UnicodeEncodeError:
                raise BadRequest("JSON strings must not contain unpaired surrogates") from None
            if "\x00" in item:
                raise BadRequest("JSON strings must not contain \\u0000")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise BadRequest(f"JSON is nested more than {max_depth} levels deep", {"maxDepth": max_depth})
            children = (*item.keys(), *item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


JSON_MAX_DEPTH = 64
"""Default nesting bound of request JSON: deep enough for any real payload, far below what
Python's recursive encoders and pydantic's validators can handle."""


_STRICT_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
)


def parse_json(raw: bytes, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Strict JSON that every consumer can store and re-encode, else 400: no NaN/Infinity or
    numbers that overflow to them, no duplicate object keys, no NUL or lone surrogates, and
    nesting at most `max_depth` deep."""
    try:
        # json.loads(raw, **hooks), without building a decoder (and its scanner) per call.
        value = _STRICT_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest("request body is not valid JSON", {"reason": reason}) from None
    _check_storable(value, max_depth)
    return value


async def livez(_request: web.Request) -> web.Response:
    """Alive: the process answers (also served as /healthz)."""
    return json_response({"status": "ok"})


async def _postgres_reachable(app: web.Application) -> bool:
    """Postgres answers. A pool with every connection in use is busy, not down: then ask over a
    side connection instead of queueing behind the work (a busy pool is not an outage)."""
    db = app[DB_KEY]
    pool = db.pool
    if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
        try:
            # No statement cache: this may go through a transaction-mode pooler (DB_POOLER_MODE).
            conn = await asyncpg.connect(app[SETTINGS_KEY].database_url, timeout=2, statement_cache_size=0)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=2)
            return True
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return False
        finally:
            await conn.close(timeout=2)
    return await db.ping()


async def readyz(request: web.Request) -> web.Response:
    """Ready to do its job: Postgres reachable (it is the outbox). NATS down only degrades the
    service (wake-ups and cache invalidation wait; the sweeper dispatches from Postgres), so it
    is reported in the body and in `routines_dependency_up`, with 200."""
    db_ok = await _postgres_reachable(request.app)
    nats_ok = request.app[BUS_KEY].is_connected
    DEPENDENCY_UP.labels("postgres").set(1 if db_ok else 0)
    DEPENDENCY_UP.labels("nats").set(1 if nats_ok else 0)
    body = {"postgres": "ok" if db_ok else "down", "nats": "ok" if nats_ok else "down"}
    if not db_ok:
        return json_response({"status": "unavailable", **body}, status=503)
    return json_response({"status": "ready" if nats_ok else "degraded", **body})


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _not_found(request: web.Request) -> web.Response:
    """The catch-all route: 405 with `Allow` when the path exists for other methods, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    allowed.discard("*")
    if allowed:
        raise MethodNotAllowed(request.method, request.path, sorted(allowed))
    raise NotFound(f"no route for {request.method} {request.path}")


class MethodNotAllowed(RoutinesError):
    """Method not allowed."""

    status = 405

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        super().__init__(f"method {method} not allowed on {path}", {"allowed": allowed})
        self.allowed = allowed


def create_base_app(
    service: str, settings: CommonSettings, client_max_size: int | None = None
) -> web.Application:
    """An app with the shared middlewares, health routes and platform (pool, bus) wired in."""
    app = web.Application(
        middlewares=[edge_middleware],
        client_max_size=client_max_size or settings.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[DB_KEY] = Database(settings, application_name=service)
    app[BUS_KEY] = Bus.from_settings(settings, name=service)
    app[SUPERVISOR_KEY] = Supervisor(service)
    app[REFUSAL_LINES_KEY] = RefusalLines()
    # Bodies are taken as sent: an encoded one is refused (edge_middleware), never inflated.
    # aiohttp's keep-alive deadline runs from the moment a connection opens (and again after each
    # answer) until a request's headers are complete: that is the header read timeout. After an
    # early answer (408, 413) the unread rest of a body is drained for at most a second.
    app[HANDLER_ARGS_KEY] = {
        "auto_decompress": False,
        "keepalive_timeout": settings.header_timeout_sec,
        "lingering_time": 1.0,
    }
    app.on_response_prepare.append(hide_server_banner)
    install_protocol_handling()
    app.router.add_get("/livez", livez)
    app.router.add_get("/healthz", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_platform_ctx)
    platform_metrics.install(app, service, settings)
    return app


def finish_routes(app: web.Application) -> None:
    """Make every unknown path a JSON 404 (called after a service adds its routes)."""
    app.router.add_route("*", "/{tail:.*}", _not_found)


async def _platform_ctx(app: web.Application) -> AsyncIterator[None]:
    db, bus, supervisor = app[DB_KEY], app[BUS_KEY], app[SUPERVISOR_KEY]
    await db.open()
    supervisor.spawn("nats-connect", bus.connect_forever(supervisor.stopping), critical=False)
    yield
    await supervisor.shutdown()
    await bus.close()
    await db.close()
