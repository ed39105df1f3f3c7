"""Prometheus metrics of the scheduler."""

from prometheus_client import Counter, Gauge, Histogram

FIRE_LAG = Histogram(
    "routines_scheduler_fire_lag_seconds",
    "Run recorded minus slot time",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
FIRES = Counter("routines_scheduler_fires_total", "Slots handled, by outcome", ["outcome"])
DUE_BACKLOG = Gauge("routines_scheduler_due_backlog", "Schedule triggers due and not yet claimed")
TICK_SECONDS = Histogram(
    "routines_scheduler_tick_seconds",
    "Duration of one wake-up (all due triggers drained)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RUNS_DECIDED = Counter(
    "routines_scheduler_runs_decided_total",
    "Runs of prepared slots decided ahead (issue created, coalesced, …) and committed at the slot",
    ["status"],
)
