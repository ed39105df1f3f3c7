"""run_every: when the next run starts, and which failures the loop survives."""

from __future__ import annotations

import asyncio

import pytest

from shared.lifecycle import run_every


class Loop:
    """Steps that answer from a script; sleeps recorded instead of slept; stops after the script."""

    def __init__(self, script: list[float | BaseException | None]) -> None:
        self.script = script
        self.slept: list[float] = []
        self.stopping = asyncio.Event()

    async def step(self) -> float | None:
        answer = self.script.pop(0)
        if not self.script:
            self.stopping.set()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def run(self, *, unexpected: str | None = None, retry_after: float | None = None) -> None:
        await run_every(
            10.0,
            self.step,
            self.stopping,
            failed="failed",
            unexpected=unexpected,
            retry_after=retry_after,
            sleep=self.sleep,
        )


async def test_the_step_s_delay_is_slept_and_none_means_the_rest_of_every() -> None:
    loop = Loop([0.0, 2.5, None])
    await loop.run()
    assert loop.slept[:2] == [0.0, 2.5]
    assert 9.0 < loop.slept[2] <= 10.0


async def test_a_retryable_failure_waits_the_rest_of_every_or_retry_after() -> None:
    loop = Loop([OSError("down"), None])
    await loop.run()
    assert 9.0 < loop.slept[0] <= 10.0
    loop = Loop([OSError("down"), None])
    await loop.run(retry_after=3.0)
    assert loop.slept[0] == 3.0


async def test_another_failure_ends_the_loop_unless_unexpected_is_given() -> None:
    loop = Loop([ValueError("bug"), None])
    with pytest.raises(ValueError, match="bug"):
        await loop.run()
    loop = Loop([ValueError("bug"), None])
    await loop.run(unexpected="unexpected")
    assert len(loop.slept) == 2
