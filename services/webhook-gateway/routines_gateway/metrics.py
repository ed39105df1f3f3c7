"""Prometheus metrics of the webhook gateway (those counted per request on the event loop's
hot path are shared.loop_metrics', without locks)."""

from prometheus_client import Gauge, Histogram

from shared.loop_metrics import LoopCounter, LoopHistogram

OUTCOMES = LoopCounter("routines_gateway_requests_total", "Fire requests by outcome", ["outcome"])
for _outcome in (
    "accepted",
    "duplicate",
    "bad_signature",
    "stale",
    "replayed",
    "rate_limited",
    "not_active",
    "not_found",
    "too_large",
    "bad_request",
    "unavailable",
    "timeout",
    "error",
):
    OUTCOMES.inc(_outcome, amount=0)  # every outcome is exported from the start, at 0
VERIFY_SECONDS = LoopHistogram(
    "routines_gateway_verification_seconds",
    "Signature verification latency",
    [],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)
BATCH_SIZE = Histogram(
    "routines_gateway_commit_batch_size", "Runs per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
CACHE_LOOKUPS = LoopCounter("routines_gateway_trigger_cache_total", "Trigger cache lookups", ["result"])
for _result in ("hit", "negative_hit", "joined", "miss"):
    CACHE_LOOKUPS.inc(_result, amount=0)
CLOCK_OFFSET = Gauge(
    "routines_gateway_clock_offset_seconds",
    "Database clock minus this host's clock (timestamps are checked by the former)",
)
