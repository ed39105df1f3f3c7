"""Waits briefly for the dispatcher's decision of a manual run (DESIGN "Manual run")."""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg

from shared.bus import Bus, Subjects, decode
from shared.logging import get_logger

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
"""A dispatched message carries at most 100 decisions (~150 bytes each); anything far larger is junk."""


class DecisionWaiter:
    """One subscription to `routines.runs.dispatched`, fanned out to the requests waiting on it."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._waiting: dict[str, asyncio.Future[str]] = {}

    async def subscribe(self) -> None:
        await self._bus.wait_connected()
        await self._bus.subscribe(Subjects.RUNS_DISPATCHED, self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        """A message carries a list of decisions (`{"decisions": [...]}`) or, from a dispatcher
        of an earlier release, one (`{"runId": ..., "status": ...}`). A malformed entry is
        skipped, not the rest of the list."""
        if not self._waiting or len(msg.data) > MAX_MESSAGE_BYTES:
            return
        try:
            data = decode(msg.data)
            decisions = data.get("decisions", [data])
        except (ValueError, TypeError, AttributeError, RecursionError):
            return
        if not isinstance(decisions, list):
            return
        for decision in decisions:
            try:
                future = self._waiting.get(str(decision["runId"]))
                status = str(decision.get("status"))
            except (KeyError, TypeError, AttributeError):
                continue
            if future is not None and not future.done():
                future.set_result(status)

    def expect(self, run_id: str) -> asyncio.Future[str]:
        """Register interest before publishing, so a fast decision is not missed."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = future
        return future

    async def wait(self, run_id: str, future: asyncio.Future[str], timeout: float) -> bool:
        """True if the decision arrived within `timeout`."""
        try:
            if self._bus.is_connected and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout)
            return future.done()
        finally:
            self._waiting.pop(run_id, None)
