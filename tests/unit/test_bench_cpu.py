"""The benchmarks' CPU accounting: processes that exit between two reads still count, and the
control load starts and stops as asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from bench.common import CpuMeter, cpu_burner, cpu_count, machine_busy, machine_cpu, pin
from bench.pipeline_ingest import _decision_cores

# A parent that starts a child burning ~0.3 s of CPU, waits for it (reaping it), then idles: as
# Postgres' postmaster does with a backend that ends.
PARENT = """
import subprocess, sys, time
time.sleep(0.3)
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass"])
time.sleep(30)
"""


def test_cpu_of_a_child_that_exited_between_reads_counts() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        meter = CpuMeter({"parent": parent.pid})
        before = meter.read()
        deadline = time.monotonic() + 20
        # Until the child has come and gone.
        while time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children()
            if not children and psutil.Process(parent.pid).cpu_times().children_user > 0:
                break
            time.sleep(0.05)
        after = meter.read()
        assert after["parent"] - before["parent"] >= 0.25
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.parametrize(("cores", "processes"), [(0.0, 0), (0.3, 1), (1.0, 1), (1.5, 2)])
def test_the_burner_starts_what_it_is_asked_and_leaves_nothing(cores: float, processes: int) -> None:
    with cpu_burner(cores) as pids:
        assert len(pids) == processes
        assert all(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids
        )
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_decision_cores_are_the_dispatcher_and_postgres_beyond_ingests_part() -> None:
    stopped = {"accepted_per_sec": 1000.0, "cores_used": {"run-dispatcher": 0.0, "postgres": 0.42}}
    running = {"accepted_per_sec": 1000.0, "cores_used": {"run-dispatcher": 0.14, "postgres": 0.56}}
    assert _decision_cores({False: running, True: stopped}) == pytest.approx(0.28)
    # Fewer fires accepted while deciding: ingest's part of Postgres is smaller by as much.
    slower = {"accepted_per_sec": 900.0, "cores_used": {"run-dispatcher": 0.14, "postgres": 0.56}}
    assert _decision_cores({False: slower, True: stopped}) == pytest.approx(0.14 + 0.56 - 0.378)
    # Postgres busier without decisions (noise): only the dispatcher's own.
    quieter = {"accepted_per_sec": 1000.0, "cores_used": {"run-dispatcher": 0.14, "postgres": 0.30}}
    assert _decision_cores({False: quieter, True: stopped}) == pytest.approx(0.14)


def test_the_machine_figure_is_between_idle_and_every_core() -> None:
    before = machine_cpu()
    end = time.process_time() + 0.2
    while time.process_time() < end:  # this process busy meanwhile
        pass
    busy = machine_busy(before, machine_cpu())
    assert 0.0 < busy <= cpu_count()
    assert machine_busy(before, before) == 0.0


TWO_THREADS = (
    "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
)


def test_pinned_processes_and_their_threads_run_on_the_cores_named() -> None:
    """bench.pipeline_ingest --placement: a process and every thread of it, pinned; not the caller."""
    mine = os.sched_getaffinity(0)
    child = subprocess.Popen([sys.executable, "-c", TWO_THREADS])
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(child.pid).threads()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        threads = psutil.Process(child.pid).threads()
        assert len(threads) == 2
        pin([child.pid], {0})
        assert [os.sched_getaffinity(t.id) for t in threads] == [{0}, {0}]
        assert os.sched_getaffinity(0) == mine
    finally:
        child.kill()
        child.wait()
