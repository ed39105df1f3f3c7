"""Prometheus metrics of the webhook gateway."""

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = Counter("routines_gateway_requests_total", "Fire requests by outcome", ["outcome"])
# Children bound once (a labels() lookup per request costs more than the increment).
OUTCOME = {
    name: OUTCOMES.labels(name)
    for name in (
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
}
VERIFY_SECONDS = Histogram(
    "routines_gateway_verification_seconds",
    "Signature verification latency",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)
BATCH_SIZE = Histogram(
    "routines_gateway_commit_batch_size", "Runs per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
CACHE_LOOKUPS = Counter("routines_gateway_trigger_cache_total", "Trigger cache lookups", ["result"])
CACHE = {name: CACHE_LOOKUPS.labels(name) for name in ("hit", "negative_hit", "joined", "miss")}
CLOCK_OFFSET = Gauge(
    "routines_gateway_clock_offset_seconds",
    "Database clock minus this host's clock (timestamps are checked by the former)",
)
