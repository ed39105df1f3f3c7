"""POST /api/routine-triggers/public/{publicId}/fire — the one endpoint open to the internet."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.helpers import parse_content_type
from multidict import MultiMapping

from routines_gateway.cache import TriggerCache, TriggerState
from routines_gateway.clock import DbClock
from routines_gateway.ingest import GroupCommitter, PendingRun
from routines_gateway.metrics import OUTCOMES, VERIFY_SECONDS
from routines_gateway.ratelimit import TokenBuckets
from routines_gateway.signing import AuthenticationFailed, printable_ascii, verify
from routines_gateway.sql import QUERIES
from shared.db import Database
from shared.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    RoutinesError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from shared.fastpath import FastRequest, JsonAnswer
from shared.http import answer_response, body_timeout, error_answer, json_bytes, parse_json
from shared.logging import get_logger
from shared.rules import why_not_fire
from shared.settings import GatewaySettings

log = get_logger(__name__)
_PUBLIC_ID = re.compile(r"^[0-9a-f]{24}$")


@dataclass(slots=True)
class Delivery:
    """One fire request, as aiohttp hands it (`request`: its body still to be read) or as the
    fast path takes it (`body` already here)."""

    public_id: str
    remote: str | None
    headers: MultiMapping[str]
    body: bytes | None
    request: web.Request | None = None

    @classmethod
    def of(cls, request: web.Request) -> Delivery:
        return cls(request.match_info["publicId"], request.remote, request.headers, None, request)

    @classmethod
    def taken(cls, request: FastRequest) -> Delivery:
        return cls(request.params[0], request.remote, request.headers, request.body)

    @property
    def content_type(self) -> str:
        """The media type of the body, as aiohttp reads it (lower case, no parameters)."""
        if self.request is not None:
            return self.request.content_type
        return _media_type(self.headers.get(hdrs.CONTENT_TYPE))


@functools.lru_cache(maxsize=256)
def _media_type(raw: str | None) -> str:
    return "application/octet-stream" if raw is None else parse_content_type(raw)[0]


class Rejected(Exception):
    """A refusal, and the outcome it is counted as in the metrics."""

    def __init__(self, outcome: str, error: RoutinesError) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.error = error


class FireHandler:
    """Checks in DESIGN order: 404, 401, 409; then the run is committed and 202 answered."""

    def __init__(
        self,
        settings: GatewaySettings,
        db: Database,
        cache: TriggerCache,
        committer: GroupCommitter,
        clock: DbClock,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.cache = cache
        self.committer = committer
        self.per_trigger = TokenBuckets(
            settings.rate_limit_trigger_per_sec, settings.rate_limit_trigger_burst
        )
        self.per_client = TokenBuckets(settings.rate_limit_client_per_sec, settings.rate_limit_client_burst)
        # Failed attempts: unknown webhook URLs per client address; failed signatures per address
        # and trigger, charged on failure and checked before verifying.
        self.failed = TokenBuckets(settings.rate_limit_failed_per_sec, settings.rate_limit_failed_burst)
        self.trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies]
        self.lookups = TokenBuckets(settings.trigger_lookups_per_sec, settings.trigger_lookups_burst)

    def client_address(self, delivery: Delivery) -> str:
        """The rate-limit key of the client: behind trusted proxies, X-Forwarded-For walked from the
        right (each trusted hop vouches for the entry before it) to the first untrusted valid IP;
        never the client-written leftmost entry. IPv6 clients are grouped by /64."""
        remote = delivery.remote or ""
        if not self.trusted:
            return _client_key(remote)
        peer = _ip(remote)
        if peer is None:
            return remote or "unknown"
        client = peer
        if self._is_trusted(peer):
            hops = ",".join(delivery.headers.getall("X-Forwarded-For", [])).split(",")
            for hop in reversed(hops):
                address = _ip(hop.strip())
                if address is None:
                    break  # not written by a trusted proxy: the hop that received it is the client
                client = address
                if not self._is_trusted(address):
                    break
        return _key_of(client)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.trusted)

    async def fire(self, request: web.Request) -> web.Response:
        """The fire route as aiohttp serves it."""
        return answer_response(await self.answer(Delivery.of(request)))

    async def fire_taken(self, request: FastRequest) -> JsonAnswer:
        """The fire route as the fast path serves it (shared.fastpath)."""
        return await self.answer(Delivery.taken(request))

    async def answer(self, delivery: Delivery) -> JsonAnswer:
        """Serve one fire, counting its outcome once."""
        try:
            outcome, answer = await self.handle(delivery)
        except Rejected as rejected:
            OUTCOMES.inc(rejected.outcome)
            return error_answer(rejected.error)
        except RoutinesError as exc:  # a 408 closes the connection: the rest is not worth waiting for
            OUTCOMES.inc("timeout" if isinstance(exc, RequestTimeout) else _outcome_of(exc))
            return error_answer(exc)
        except Exception:
            OUTCOMES.inc("error")  # every 5xx is counted, the unexpected ones too
            raise
        OUTCOMES.inc(outcome)
        return answer

    async def handle(self, delivery: Delivery) -> tuple[str, JsonAnswer]:
        client = self.client_address(delivery)
        wait = self.per_client.take(client)
        if wait:
            raise Rejected("rate_limited", RateLimited(wait, "too many requests from this address"))
        public_id = delivery.public_id
        trigger = self.cache.fresh(public_id)
        if trigger is None and _PUBLIC_ID.match(public_id):
            # A webhook the cache does not know costs a query: those are budgeted per process, so
            # random URLs from many addresses cannot flood the database (the per-address budget
            # below is charged only after the lookup, to never refuse a webhook that exists).
            if not self.cache.known(public_id) and (wait := self.lookups.take("")):
                raise Rejected("rate_limited", RateLimited(wait, "too many unknown webhooks at once; retry"))
            trigger = await self.cache.get(public_id)
        if trigger is None:
            # Probing for webhook URLs is a failed attempt too, on the address's own budget: it
            # never refuses that address's deliveries to webhooks that exist (providers deliver
            # for many tenants from one address).
            wait = self.failed.take(client)
            if wait:
                raise Rejected(
                    "rate_limited", RateLimited(wait, "too many unknown webhooks from this address")
                )
            raise Rejected("not_found", NotFound("webhook not found"))
        # Failed signatures count per address and trigger: one tenant's failing webhook (or a
        # stranger guessing its secret) never refuses another's deliveries from the same address.
        failures = f"{client} {trigger.key}"
        wait = self.failed.peek(failures)
        if wait:
            raise Rejected("rate_limited", RateLimited(wait, "too many failed attempts for this webhook"))
        # A trigger out of budget refuses before any work: no body read, no signature checked.
        # Peeking spends nothing, so strangers still cannot starve it (only a verified fire takes).
        wait = self.per_trigger.peek(trigger.key)
        if wait:
            raise Rejected("rate_limited", RateLimited(wait, "too many requests for this webhook"))
        body = delivery.body if delivery.body is not None else await self._read_body(delivery.request)
        started = time.perf_counter()
        try:
            verified = verify(
                trigger.signing_mode,
                delivery.headers,
                body,
                trigger.secrets,
                self.clock.now(),  # the database's clock, which also judges the replay window
                trigger.replay_window_sec,
            )
        except AuthenticationFailed as exc:
            log.info("webhook authentication failed", trigger_id=trigger.key, reason=exc.reason)
            self.failed.take(failures)
            outcome = "stale" if exc.stale else "bad_signature"
            raise Rejected(outcome, Unauthorized("webhook authentication failed")) from None
        finally:
            VERIFY_SECONDS.observe(time.perf_counter() - started)
        # Only an authenticated sender spends the trigger's budget: strangers cannot starve it.
        wait = self.per_trigger.take(trigger.key)
        if wait:
            raise Rejected("rate_limited", RateLimited(wait, "too many requests for this webhook"))
        refusal = why_not_fire(trigger.enabled, trigger.routine_status)
        if refusal is not None:
            raise Rejected("not_active", Conflict(refusal))
        payload = _payload(delivery, body, self.settings.json_max_depth)
        idempotency_key = delivery.headers.get("Idempotency-Key") or None
        if idempotency_key is not None:
            _check_key("Idempotency-Key", idempotency_key)
        if verified.delivery_id is not None:
            _check_key("delivery id", verified.delivery_id)
            if verified.delivery_id.startswith(SIGNATURE_KEY_PREFIXES):
                # The sender's id would pose as a signature key and slip past the signature index.
                raise BadRequest("delivery id must not start with sig: or github-sig:")
        delivery_key = verified.delivery_id or _signature_key(trigger.signing_mode, verified.signature)
        pending = PendingRun(
            trigger.routine_id,
            trigger.company_id,
            trigger.trigger_id,
            payload,
            idempotency_key,
            delivery_key,
            verified.signature,
        )
        if await self.committer.submit(pending):  # committed and announced
            return "accepted", JsonAnswer(202, trigger.accepted_body(str(pending.id)))
        return "duplicate", await self._repeat(trigger, pending)

    async def _repeat(self, trigger: TriggerState, pending: PendingRun) -> JsonAnswer:
        """A unique key matched: replay (409) or a legitimate retry (200 with the original run)."""
        async with self.db.connection() as conn:
            if pending.delivery_key is not None:
                row = await conn.fetchrow(
                    QUERIES["existing_delivery"],
                    trigger.trigger_id,
                    pending.delivery_key,
                    trigger.replay_window_sec,
                )
                if row is not None:
                    replayed = row["in_window"] and row["delivery_signature"] == pending.delivery_signature
                    # No timestamp to tell a replay from GitHub's Redeliver: there the same delivery
                    # id is the redelivery, and gets the original run.
                    if replayed and trigger.signing_mode != "github_hmac":
                        raise Rejected("replayed", Conflict("replayed delivery"))
                    return _original(row, trigger)
            if pending.delivery_signature is not None:
                seen = await conn.fetchval(
                    QUERIES["existing_signature"], trigger.trigger_id, pending.delivery_signature
                )
                if seen is not None:
                    raise Rejected("replayed", Conflict("signature already used for another delivery"))
            if pending.idempotency_key is not None:
                row = await conn.fetchrow(
                    QUERIES["existing_idempotent"],
                    trigger.routine_id,
                    trigger.trigger_id,
                    pending.idempotency_key,
                    pending.payload,
                )
                if row is not None:
                    if not row["same_payload"]:
                        raise Unprocessable(
                            "Idempotency-Key was already used with a different payload",
                            {"runId": str(row["id"])},
                        )
                    return _original(row, trigger)
        raise Conflict("delivery conflicts with an earlier run")

    async def _read_body(self, request: web.Request | None) -> bytes:
        assert request is not None  # a delivery without its body is aiohttp's request
        limit = self.settings.webhook_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        content = request.content
        if content.is_eof():  # all of it came with the headers (most do): nothing to wait for
            body = content.read_nowait(limit + 1)
            if len(body) > limit:
                raise _too_large(limit)
            return body
        # Read to the end (a body arrives in as many TCP segments as the network likes), never
        # holding more than limit + 1 bytes: chunked bodies carry no length to check up front.
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_sec):
                while size <= limit:
                    chunk = await content.read(limit + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except TimeoutError:
            raise body_timeout(self.settings.body_timeout_sec) from None
        if size > limit:
            raise _too_large(limit)
        return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body exceeds {limit} bytes")


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A valid IP address (IPv4-mapped IPv6 as IPv4), or None. Parsed once per distinct text:
    every request asks about its peer, and a flood comes from few of them."""
    if len(text) > 45:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _key_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """A client's rate-limit key: its address; IPv6 clients grouped by /64."""
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@functools.lru_cache(maxsize=4096)
def _client_key(peer: str) -> str:
    """The rate-limit key of a peer address as the transport gives it (no trusted proxies)."""
    address = _ip(peer)
    return (peer or "unknown") if address is None else _key_of(address)


SIGNATURE_KEY_PREFIXES = ("sig:", "github-sig:")


def _signature_key(mode: str, signature: str | None) -> str | None:
    """The delivery key of a signed delivery without a delivery id: its signature.

    hmac_sha256 (`sig:`) never carries an id, so routine_runs_delivery alone makes each signature
    one run and routine_runs_signature leaves these rows out (one index entry less per fire).
    github_hmac (`github-sig:`) may carry the same signature with or without X-GitHub-Delivery:
    its rows must be in routine_runs_signature too, so whichever form comes first, the signature
    makes one run (migration 0008)."""
    if signature is None:
        return None
    return f"github-sig:{signature}" if mode == "github_hmac" else f"sig:{signature}"


def _check_key(name: str, value: str) -> None:
    """Keys and ids are stored and compared as text: printable ASCII, at most 255 characters."""
    if len(value) > 255:
        raise BadRequest(f"{name} is longer than 255 characters")
    if not printable_ascii(value):
        raise BadRequest(f"{name} must be printable ASCII")


def _payload(delivery: Delivery, body: bytes, max_depth: int) -> dict[str, Any]:
    if not body.strip():
        return {}
    content_type = delivery.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType("body must be application/json")
    data = parse_json(body, max_depth)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _original(row: Any, trigger: TriggerState) -> JsonAnswer:
    """A legitimate retry: 200 with the run the earlier delivery recorded."""
    return JsonAnswer(200, json_bytes(trigger.answer(str(row["id"]), row["status"], duplicate=True)))


def _outcome_of(exc: RoutinesError) -> str:
    """Outcomes of errors raised below the handler (body reading, parsing, the database)."""
    return {
        404: "not_found",
        413: "too_large",
        400: "bad_request",
        415: "bad_request",
        409: "replayed",
        422: "bad_request",
        503: "unavailable",
    }.get(exc.status, "error")
