"""Prometheus metrics of the webhook gateway (those counted per request on the event loop's
hot path are shared.loop_metrics', without locks)."""

from prometheus_client import Gauge, Histogram

from shared.loop_metrics import LoopCounter, LoopHistogram

_OUTCOME_NAMES = (
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
)
OUTCOMES = LoopCounter(
    "routines_gateway_requests_total",
    "Fire requests by outcome",
    ["outcome"],
    zeros=[(name,) for name in _OUTCOME_NAMES],  # every outcome exported from the start
)
VERIFY_SECONDS = LoopHistogram(
    "routines_gateway_verification_seconds",
    "Signature verification latency",
    [],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)
BATCH_SIZE = Histogram(
    "routines_gateway_commit_batch_size", "Runs per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
COMMIT_SECONDS = LoopHistogram(
    "routines_gateway_commit_seconds",
    "A group commit's phases: wait (its oldest fire queued for a writer), insert (the INSERT and "
    "its commit) and announce (publishing its runs to JetStream, until acknowledged)",
    ["phase"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CACHE_LOOKUPS = LoopCounter(
    "routines_gateway_trigger_cache_total",
    "Trigger cache lookups",
    ["result"],
    zeros=[(result,) for result in ("hit", "negative_hit", "joined", "miss")],
)
CLOCK_OFFSET = Gauge(
    "routines_gateway_clock_offset_seconds",
    "Database clock minus this host's clock (timestamps are checked by the former)",
)
