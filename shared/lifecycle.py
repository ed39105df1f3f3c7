"""Process lifecycle: signals, supervised background tasks, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from shared.db import RETRYABLE_ERRORS
from shared.fastpath import ServiceRunner
from shared.logging import get_logger

log = get_logger(__name__)

# The exit code of a service that could not listen on its port (another process holds it).
EXIT_CANNOT_LISTEN = 3


class Supervisor:
    """Owns the service's background loops. A critical loop that dies stops the whole service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], critical: bool = True) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, critical))

    def _finished(self, task: asyncio.Task[Any], critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task died", task=task.get_name(), error=repr(exc), exc_info=exc)
        elif not critical:
            return
        else:
            log.error("background task ended unexpectedly", task=task.get_name())
        if critical:
            self.exit_code = 1
            self.stopping.set()

    async def shutdown(self, timeout: float = 8.0) -> None:
        """Ask loops to finish their current work, then cancel what is left."""
        self.stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)


SUPERVISOR_KEY = web.AppKey("supervisor", Supervisor)
HANDLER_ARGS_KEY = web.AppKey("handler_args", dict[str, Any])
"""Options of the HTTP connection handler (e.g. keepalive_timeout) a service asks `serve` for."""


def runner_options(app: web.Application) -> dict[str, Any]:
    """How an app's connections are served (`serve`, and the tests' in-process server): aiohttp's
    access log off (the edge middleware writes ours), a handler never cancelled because its client
    went away (a recorded run is still answered and counted), and the app's own connection
    options (timeouts, lingering, bodies never inflated)."""
    connection_options: dict[str, Any] = app.get(HANDLER_ARGS_KEY, {})
    return {"access_log": None, "handler_cancellation": False, **connection_options}


async def serve(app: web.Application, host: str, port: int, shutdown_timeout: float, backlog: int) -> int:
    """Run an app until SIGTERM/SIGINT or a critical task dies; return the exit code. `backlog`
    is the listen socket's: connections the kernel accepts for the app while its loop is busy."""
    supervisor = app[SUPERVISOR_KEY]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stopping.set)
    settle_heap()  # what is loaded; not yet what the app starts (pools, workers), which may die in cycles
    options = runner_options(app)
    runner = ServiceRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout, **options)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=backlog)
    try:
        await site.start()
    except OSError as exc:
        # One clear line instead of a traceback (e.g. EADDRINUSE); `routines dev` reads it too.
        log.error("cannot listen", service=supervisor.service, host=host, port=port, error=exc.strerror)
        await runner.cleanup()
        return EXIT_CANNOT_LISTEN
    bound = [addr[1] for addr in runner.addresses if isinstance(addr, tuple)]
    log.info("listening", service=supervisor.service, host=host, port=bound[0] if bound else port)
    await supervisor.stopping.wait()
    log.info("shutting down", service=supervisor.service)
    await runner.cleanup()
    log.info("stopped", service=supervisor.service, exit_code=supervisor.exit_code)
    return supervisor.exit_code


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True early (and at once) when the service is stopping."""
    if seconds <= 0:
        return stopping.is_set()
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def run_every(
    every: float,
    step: Callable[[], Awaitable[float | None]],
    stopping: asyncio.Event,
    *,
    failed: str,
    retryable: tuple[type[BaseException], ...] = RETRYABLE_ERRORS,
    unexpected: str | None = None,
    retry_after: float | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> None:
    """Run `step` again and again until `stopping` is set: the next run starts `every` seconds
    after this one started, or — when the step returns a number — that many seconds after it
    ended (0: at once). A `retryable` error is logged as the warning `failed` and the loop goes on;
    with `unexpected` any other error too (logged with its traceback), without it that ends the loop.
    After a logged failure the next run starts as after a run that returned None, or, with
    `retry_after`, that many seconds after the failure.
    Failures are logged by the step's module's logger. `sleep` waits between runs (default:
    `sleep_unless_stopped`; one that also wakes on other news)."""
    step_log = get_logger(step.__module__)
    wait = sleep or (lambda seconds: sleep_unless_stopped(stopping, seconds))
    while not stopping.is_set():
        started = time.monotonic()
        delay = retry_after  # unless the step runs to its end
        try:
            delay = await step()
        except retryable as exc:
            step_log.warning(failed, error=repr(exc))
        except Exception:
            if unexpected is None:
                raise
            step_log.exception(unexpected)
        await wait(every - (time.monotonic() - started) if delay is None else delay)


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations (less deallocations) of tracked objects between two collections of the youngest
generation: Python's default is 700."""


def settle_heap() -> None:
    """As a service starts: what it has loaded (modules, settings, routes) is moved out of the
    cyclic garbage collector's sight, and its youngest generation is collected every 20,000
    allocations rather than 700. A service makes objects fast and frees nearly all of them by
    reference counting (a decision makes records, tuples and messages for each of hundreds of runs),
    so the default collected them dozens of times a transaction, each time walking everything
    young: 16 % of a dispatcher's CPU a decision (31 against 26 µs, docs/benchmarks.md §8).
    Cyclic garbage still goes, a little later; the frozen objects live as long as the process."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
