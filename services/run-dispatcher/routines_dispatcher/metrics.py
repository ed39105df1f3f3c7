"""Prometheus metrics of the dispatcher."""

from prometheus_client import Counter, Histogram

RUNS_DECIDED = Counter("routines_dispatcher_runs_decided_total", "Runs decided", ["status"])
DECISION_LATENCY = Histogram(
    "routines_dispatcher_decision_latency_seconds",
    "Time from a run being recorded to its decision",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REDELIVERIES = Counter("routines_dispatcher_redeliveries_total", "Messages delivered more than once")
SWEEPER_PICKUPS = Counter("routines_dispatcher_sweeper_pickups_total", "Runs decided by the sweeper")
TERMINATED = Counter("routines_dispatcher_terminated_total", "Messages that can never succeed", ["reason"])
