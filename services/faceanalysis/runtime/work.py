"""Blocking work off the event loop, admitted against the pod's budget.

Servers run on asyncio, so an open call costs no thread. What blocks (decoding, inference,
Redis) runs in the loop's thread pool through `run_blocking`. `Admission` caps the work a pod
holds at once. The cap is what the memory limit holds, so a burst can slow a pod down but
never get it OOM-killed. Beyond the cap a call may wait in a short first-come-first-served line
(`queue` calls, at most `wait_seconds`, never past its deadline); when the line is full or the
wait runs out it is refused with RESOURCE_EXHAUSTED, which a client (or image-input, for its
peers) retries after a backoff. Why a line at all: refusing at once made 16 clients against 8
slots send each photo again about 13 times (`make soak`), each resend costing an upload and a
round trip, and whoever happened to retry at the right moment went first, which spread latency.
A waiting call holds only its request message, which gRPC had already read before it was refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import time
from contextlib import asynccontextmanager, contextmanager

import grpc

from faceanalysis.runtime import memory, metrics

# Trailing metadata on RESOURCE_EXHAUSTED answers that mean "busy, try again": it tells them
# apart from RESOURCE_EXHAUSTED for input that is too large, which no retry will fix.
OVERLOADED_KEY = "x-faceanalysis-overloaded"
OVERLOADED = ((OVERLOADED_KEY, "1"),)


class Overloaded(Exception):
    """The pod is at capacity; the caller should retry later (RESOURCE_EXHAUSTED)."""


def is_overloaded(err: grpc.RpcError) -> bool:
    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    metadata = err.trailing_metadata() or ()
    return any(key == OVERLOADED_KEY for key, _ in metadata)


async def abort_overloaded(context, err: Exception):
    """End the call with RESOURCE_EXHAUSTED marked as "busy, retry" (see OVERLOADED)."""
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err), trailing_metadata=OVERLOADED)


def deadline(context) -> float | None:
    """The call's deadline as a time.monotonic() value; None when the client set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def run_blocking(fn, *args, **kwargs):
    """Run `fn` in the loop's thread pool, carrying the request id (contextvars) along."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(None, call)


class Admission:
    """At most `limit` work items at once, counted in `faceanalysis_work_in_flight`, and at most
    `queue` calls waiting for room (`faceanalysis_work_queued`), each for at most `wait_seconds`.

    Used from the event loop only, so plain counters are enough.
    """

    def __init__(self, service: str, limit: int, unit: str = "images", *, queue: int = 0,
                 wait_seconds: float = 0.0):
        self.service, self.limit, self.unit = service, limit, unit
        self.queue, self.wait_seconds = queue, wait_seconds
        self.active = 0
        self._waiting: collections.deque[tuple[asyncio.Future, int]] = collections.deque()
        metrics.WORK_CAPACITY.labels(service).set(limit)
        self._gauge = metrics.WORK_IN_FLIGHT.labels(service)
        self._queued = metrics.WORK_QUEUED.labels(service)

    def _fits(self, count: int) -> bool:
        # A single item larger than the whole budget is still admitted when the pod is idle,
        # else it could never run.
        return not self.active or self.active + count <= self.limit

    def _take(self, count: int) -> None:
        self.active += count
        self._gauge.inc(count)

    def _refuse(self, why: str) -> Overloaded:
        metrics.ADMISSION_REJECTIONS.labels(self.service).inc()
        return Overloaded(f"{self.service} is at capacity ({self.active} of {self.limit} {self.unit} in progress"
                          f"{why}); retry in a moment")

    def acquire(self, count: int = 1) -> None:
        """Admit now or raise Overloaded: no waiting (and no overtaking the calls that wait)."""
        if self._waiting or not self._fits(count):
            raise self._refuse("")
        self._take(count)

    async def enter(self, count: int = 1, deadline: float | None = None) -> None:
        """Admit now, or wait in line for room; raises Overloaded when the line is full or the wait
        (at most `wait_seconds`, and never past `deadline`, a time.monotonic() value) runs out."""
        if not self._waiting and self._fits(count):
            self._take(count)
            return
        patience = self.wait_seconds if deadline is None else min(self.wait_seconds, deadline - time.monotonic())
        if len(self._waiting) >= self.queue or patience <= 0:
            raise self._refuse(f", {len(self._waiting)} waiting" if self.queue else "")
        turn = asyncio.get_running_loop().create_future()
        entry = (turn, count)
        self._waiting.append(entry)
        self._queued.inc()
        try:
            await asyncio.wait((turn,), timeout=patience)
        except asyncio.CancelledError:
            self._leave(entry, count)
            raise
        if not turn.done():
            self._leave(entry, count)
            raise self._refuse(f"; waited {patience:.1f} s in line")

    def _leave(self, entry: tuple[asyncio.Future, int], count: int) -> None:
        """A waiter gives up (timeout or cancellation): out of the line, or, if its turn came in
        the meantime, the slot it was given goes back."""
        turn = entry[0]
        if turn.done():
            self.release(count)
            return
        turn.cancel()
        self._waiting.remove(entry)
        self._queued.dec()

    def _admit_waiting(self) -> None:
        while self._waiting and self._fits(self._waiting[0][1]):
            turn, count = self._waiting.popleft()
            self._queued.dec()
            self._take(count)
            turn.set_result(None)

    def release(self, count: int = 1) -> None:
        self.active -= count
        self._gauge.dec(count)
        self._admit_waiting()
        if self.active == 0:
            # Idle: hand the heap that the last burst freed back to the OS, off the event loop.
            # Under steady load this never runs; after a burst it stops RSS from staying at the peak.
            asyncio.get_running_loop().run_in_executor(None, memory.release)

    @contextmanager
    def admit(self, count: int = 1):
        """Admitted now, or Overloaded (no waiting)."""
        self.acquire(count)
        try:
            yield
        finally:
            self.release(count)

    @asynccontextmanager
    async def admitted(self, count: int = 1, deadline: float | None = None):
        """Admitted, after waiting in line if need be (see `enter`)."""
        await self.enter(count, deadline)
        try:
            yield
        finally:
            self.release(count)

    async def run(self, fn, *args, count: int = 1, deadline: float | None = None):
        """Admit (waiting in line if need be), then run `fn` in the thread pool. The slot is held
        until the thread is done, even when the caller is cancelled first: a thread cannot be
        stopped, and its memory is only free once it returns."""
        await self.enter(count, deadline)
        task = asyncio.ensure_future(run_blocking(fn, *args))
        task.add_done_callback(lambda _t: self.release(count))
        return await asyncio.shield(task)
