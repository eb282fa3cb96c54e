"""Blocking work off the event loop, admitted against the pod's budget.

Servers run on asyncio, so an open call costs no thread. What blocks (decoding, inference,
Redis) runs in the loop's thread pool through `run_blocking`. `Admission` caps the work a pod
holds at once: beyond the cap a call is refused at once with RESOURCE_EXHAUSTED, which a
client (or image-input, for its peers) retries after a backoff. The cap is what the memory
limit holds, so a burst can slow a pod down but never get it OOM-killed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from contextlib import contextmanager

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


async def run_blocking(fn, *args, **kwargs):
    """Run `fn` in the loop's thread pool, carrying the request id (contextvars) along."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(None, call)


class Admission:
    """At most `limit` work items at once, counted in `faceanalysis_work_in_flight`.

    Used from the event loop only, so a plain counter is enough.
    """

    def __init__(self, service: str, limit: int, unit: str = "images"):
        self.service, self.limit, self.unit = service, limit, unit
        self.active = 0
        metrics.WORK_CAPACITY.labels(service).set(limit)
        self._gauge = metrics.WORK_IN_FLIGHT.labels(service)

    def acquire(self, count: int = 1) -> None:
        # A single item larger than the whole budget is still admitted when the pod is idle,
        # else it could never run.
        if self.active and self.active + count > self.limit:
            metrics.ADMISSION_REJECTIONS.labels(self.service).inc()
            raise Overloaded(f"{self.service} is at capacity ({self.active} of {self.limit} {self.unit} "
                             f"in progress); retry in a moment")
        self.active += count
        self._gauge.inc(count)

    def release(self, count: int = 1) -> None:
        self.active -= count
        self._gauge.dec(count)
        if self.active == 0:
            # Idle: hand the heap that the last burst freed back to the OS, off the event loop.
            # Under steady load this never runs; after a burst it stops RSS from staying at the peak.
            asyncio.get_running_loop().run_in_executor(None, memory.release)

    @contextmanager
    def admit(self, count: int = 1):
        self.acquire(count)
        try:
            yield
        finally:
            self.release(count)

    async def run(self, fn, *args, count: int = 1):
        """Admit, then run `fn` in the thread pool. The slot is held until the thread is done,
        even when the caller is cancelled first: a thread cannot be stopped, and its memory is
        only free once it returns."""
        self.acquire(count)
        task = asyncio.ensure_future(run_blocking(fn, *args))
        task.add_done_callback(lambda _t: self.release(count))
        return await asyncio.shield(task)
