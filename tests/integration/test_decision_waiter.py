"""The API's wait for a manual run's decision hears every form a dispatcher announces it in."""

from __future__ import annotations

import uuid

from routines_api.waiter import DecisionWaiter
from shared.bus import Bus, Subjects
from tests.support import Stack, publish_raw


async def test_decisions_are_heard_in_lists_and_one_by_one(stack: Stack) -> None:
    """A dispatcher announces up to a hundred decisions per message; one of the earlier release
    (during a rolling deploy) one per message. Garbage on the subject wakes nobody and breaks
    nothing."""
    bus = Bus(stack.nats_url, "test-waiter")
    await bus.connect_forever()
    try:
        waiter = DecisionWaiter(bus)
        await waiter.subscribe()
        listed, alone, never = (str(uuid.uuid4()) for _ in range(3))
        futures = {run: waiter.expect(run) for run in (listed, alone, never)}
        await publish_raw(stack.nats_url, Subjects.RUNS_DISPATCHED, b"[1]", b"{", b'{"decisions": 7}')
        other = str(uuid.uuid4())
        await bus.publish(
            Subjects.RUNS_DISPATCHED,
            {
                "decisions": [
                    {"status": "skipped"},  # malformed entries are skipped, not the rest of the list
                    7,
                    {"runId": other, "status": "skipped", "issueId": None},
                    {"runId": listed, "status": "coalesced", "issueId": str(uuid.uuid4())},
                ]
            },
        )
        await bus.publish(Subjects.RUNS_DISPATCHED, {"runId": alone, "status": "failed", "issueId": None})
        assert await waiter.wait(listed, futures[listed], 10)
        assert await waiter.wait(alone, futures[alone], 10)
        assert not await waiter.wait(never, futures[never], 0.2)
        assert (futures[listed].result(), futures[alone].result()) == ("coalesced", "failed")
    finally:
        await bus.close()
