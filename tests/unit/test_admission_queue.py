"""Admission: a pod's cap on work, and the short first-come-first-served line in front of it."""

from __future__ import annotations

import asyncio
import time

import pytest

from faceanalysis.runtime.work import Admission, Overloaded


def run(coro):
    return asyncio.run(coro)


def test_calls_beyond_the_cap_wait_their_turn_in_arrival_order():
    async def main():
        admission = Admission("test-fifo", 2, queue=4, wait_seconds=5)
        order = []

        async def call(name, hold):
            async with admission.admitted():
                order.append(name)
                await asyncio.sleep(hold)

        tasks = [asyncio.create_task(call(i, 0.05)) for i in range(6)]
        await asyncio.gather(*tasks)
        assert order == list(range(6))
        assert admission.active == 0 and not admission._waiting

    run(main())


def test_a_full_line_refuses_at_once():
    async def main():
        admission = Admission("test-full", 1, queue=1, wait_seconds=5)
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="1 of 1 images in progress, 1 waiting"):
            await admission.enter()
        assert time.monotonic() - started < 0.5
        admission.release()
        await waiter  # the waiter got the slot that was freed
        assert admission.active == 1
        admission.release()

    run(main())


def test_a_wait_ends_at_wait_seconds_or_at_the_deadline():
    async def main():
        admission = Admission("test-timeout", 1, queue=4, wait_seconds=0.2)
        await admission.enter()
        started = time.monotonic()
        with pytest.raises(Overloaded, match="waited 0.2 s in line"):
            await admission.enter()
        assert 0.15 < time.monotonic() - started < 1.0
        started = time.monotonic()
        with pytest.raises(Overloaded):
            await admission.enter(deadline=time.monotonic() + 0.05)
        assert time.monotonic() - started < 0.15
        with pytest.raises(Overloaded):  # a deadline already past: no wait at all
            await admission.enter(deadline=time.monotonic() - 1)
        assert not admission._waiting and admission.active == 1
        admission.release()
        assert admission.active == 0

    run(main())


def test_a_cancelled_waiter_leaves_the_line_and_leaks_no_slot():
    async def main():
        admission = Admission("test-cancel", 1, queue=4, wait_seconds=5)
        await admission.enter()
        gone = asyncio.create_task(admission.enter())
        after = asyncio.create_task(admission.enter())
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert len(admission._waiting) == 1
        admission.release()
        await after  # the slot skipped the cancelled caller
        assert admission.active == 1
        admission.release()
        assert admission.active == 0

    run(main())


def test_a_slot_granted_to_a_caller_cancelled_at_that_moment_goes_back():
    async def main():
        admission = Admission("test-race", 1, queue=4, wait_seconds=5)
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0.01)
        admission.release()   # the waiter's turn comes ...
        waiter.cancel()        # ... and its caller goes away before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert admission.active == 0 and not admission._waiting

    run(main())


def test_without_a_line_calls_are_refused_at_once():
    async def main():
        admission = Admission("test-noqueue", 1)
        await admission.enter()
        with pytest.raises(Overloaded, match="1 of 1 images in progress\\)"):
            await admission.enter()
        with pytest.raises(Overloaded):
            admission.acquire()
        admission.release()

    run(main())
