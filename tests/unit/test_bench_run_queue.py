"""The benchmarks' run-queue figures (`bench.common.run_queue_seconds` / `run_queue_waits`): how
many threads of a process were ready to run and kept waiting for a core during a load."""

from __future__ import annotations

import os
import threading

import pytest

from bench.common import run_queue_seconds, run_queue_waits


def test_every_thread_of_a_process_is_read() -> None:
    started, stop = threading.Event(), threading.Event()

    def idle() -> None:
        started.set()
        stop.wait()

    thread = threading.Thread(target=idle)
    thread.start()
    try:
        started.wait()
        waited = run_queue_seconds({"me": os.getpid()})["me"]
        assert {os.getpid(), thread.native_id} <= set(waited)
        assert all(seconds >= 0 for seconds in waited.values())
    finally:
        stop.set()
        thread.join()


def test_a_thread_that_exited_between_reads_never_makes_a_figure_negative() -> None:
    """A Postgres backend that exits during a load takes its count with it: it is left out, not
    subtracted; one that started during the load counts from nothing."""
    before = {"postgres": {10: 5.0, 11: 9.0}}
    after = {"postgres": {10: 5.5, 12: 0.25}}  # 11 exited, 12 started
    assert run_queue_waits(before, after, 2.0) == {"postgres": pytest.approx((0.5 + 0.25) / 2.0)}
