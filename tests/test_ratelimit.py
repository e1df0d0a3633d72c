"""The token bucket on a manual clock: burst, spacing, FIFO order, cancellation."""

from __future__ import annotations

import anyio
import pytest
from manual_time import ManualTime

from orchestrator.http import ratelimit

pytestmark = pytest.mark.anyio


def bucket(time: ManualTime, rate: float = 4.0, burst: float = 1.0) -> ratelimit.TokenBucket:
    return ratelimit.TokenBucket(rate, burst, clock=time.clock, sleep=time.sleep)


async def test_burst_then_spacing() -> None:
    time = ManualTime()
    tb = bucket(time, rate=4.0, burst=3)
    for _ in range(3):
        await tb.acquire()
    assert time.requested == []
    async with anyio.create_task_group() as tg:
        tg.start_soon(tb.acquire)
        await time.someone_sleeps.wait()
        assert time.requested == [0.25]
        time.advance(0.25)
    time.advance(10)  # refills, but never beyond the burst
    for _ in range(3):
        await tb.acquire()
    assert time.requested == [0.25]


async def test_waiters_are_served_in_arrival_order() -> None:
    time = ManualTime()
    tb = bucket(time, rate=1.0)
    await tb.acquire()
    order: list[int] = []

    async def take(n: int, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await tb.acquire()
        order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            await tg.start(take, n)
        for expected in range(1, 5):
            await time.someone_sleeps.wait()
            assert len(time.sleepers) == 1  # the head waiter; the rest queue on the lock
            time.advance(1.0)
            await anyio.wait_all_tasks_blocked()
            assert len(order) == expected
    assert order == [0, 1, 2, 3]
    assert time.requested == [1.0, 1.0, 1.0, 1.0]


async def test_cancelled_waiter_spends_no_token() -> None:
    time = ManualTime()
    tb = bucket(time, rate=1.0)
    await tb.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tb.acquire)
        await time.someone_sleeps.wait()
        tg.cancel_scope.cancel()
    time.advance(1.0)
    await tb.acquire()  # the token the cancelled waiter did not take
    assert time.requested == [1.0]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        ratelimit.TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        ratelimit.TokenBucket(1.0, burst=0.5)
    assert repr(ratelimit.TokenBucket(2.0)) == "TokenBucket(rate=2.0, burst=1.0)"
