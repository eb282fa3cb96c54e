"""Many images over `AnalyzeImages` streams, each answered once: the engine of
`Client.analyze_many` and `faceanalysis analyze`.

- `streams` workers each keep one stream open and feed it from one shared queue. Items are
  drawn from the caller's iterable only when a stream has room for one more, and at most
  `streams x window` items are held at any time (sent, waiting for a retry, or answered but not
  yet taken by the caller), so an endless iterable costs bounded memory. A request is built
  (a file read, an array encoded) only when its stream asks for it.
- A stream that ends with a retryable status (the server's maximum connection age, a restart,
  a busy server) puts its unanswered items back on the queue and reconnects with backoff.
  Answered items are never sent again.
- A per-image answer that says the server is busy or a peer is restarting (`retryable`:
  RESOURCE_EXHAUSTED, UNAVAILABLE) puts that item back on the queue after a backoff, and that
  stream sends fewer items at once (its window shrinks by one, down to 1, and grows back one at a
  time as answers come), so the streams settle at what the server admits instead of being
  refused over and over. Other per-image errors (INVALID_ARGUMENT, ...) are final outcomes.
- Outcomes come back in completion order, not input order. Iteration raises AnalysisError when a
  stream fails for good (a status no retry fixes, such as UNAUTHENTICATED) or when nothing was
  answered for `retry_seconds`; the outcomes that were ready come first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import grpc

from faceanalysis.v1 import common_pb2, image_input_pb2

T = TypeVar("T")

# Sent-but-unanswered images per stream, at most (the `faceanalysis analyze` default): what a
# broken stream can lose. Busy answers shrink a stream's window below its maximum; results grow it back.
WINDOW = 4
# Reconnect backoff after a stream broke; per-image backoff after a busy answer.
INITIAL_BACKOFF, MAX_BACKOFF = 0.2, 5.0
# Images a broken stream left unanswered wait this long before they are sent again, so that work
# the server finished for them anyway has landed in its result cache and is answered from there.
REQUEUE_DELAY = 1.0
# After this long without an answer, say once what we are waiting for.
NOTICE_AFTER = 10.0

RETRYABLE_STREAM_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})


def retryable_stream_error(err: grpc.RpcError) -> bool:
    """A stream that ended like this is worth opening again: the server restarted, closed an aged
    connection, was busy, or the connection was reset."""
    code = err.code()
    reset = code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (err.details() or "")
    return code in RETRYABLE_STREAM_CODES or reset


class AnalysisError(Exception):
    """A call or an image that failed: `code` is the gRPC status name (UNAUTHENTICATED,
    INVALID_ARGUMENT, ...), `message` what the server (or gRPC, for a connection that failed) said.
    Public as faceanalysis.client.AnalysisError; defined here so that the engine below, which the
    client and the CLI share, can make them."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message

    @classmethod
    def of(cls, err: grpc.RpcError) -> "AnalysisError":
        return cls(err.code().name, err.details() or "")


# What `take` answers when the queue has nothing ready but the caller's iterable may have more.
_PULL = -1


class Batch(Generic[T]):
    """Iterate once: yields `(item, AnalysisResult | AnalysisError)` for every item, in completion order.

    `request_for(item)` builds an item's request when its stream asks for it; it may raise
    AnalysisError (or OSError, ValueError: INVALID_ARGUMENT), which becomes that item's outcome. `timeout` bounds each
    stream (None: no deadline). `notice(text)` hears, once per quiet spell, why nothing has been
    answered for a while. Closing the iterator early cancels what is in flight.
    """

    def __init__(self, stub, items: Iterable[T],
                 request_for: Callable[[T], image_input_pb2.AnalyzeImageRequest], *,
                 streams: int = 1, window: int = WINDOW, timeout: float | None = None,
                 retry_seconds: float = 120, notice: Callable[[str], None] | None = None):
        if streams < 1 or window < 1:
            raise ValueError("streams and window must be at least 1")
        self.stub, self.request_for, self.timeout = stub, request_for, timeout
        self.streams, self.window, self.retry_seconds, self.notice = streams, window, retry_seconds, notice
        self.capacity = streams * window
        self._source = iter(items)
        self.cond = threading.Condition()
        self._ids = itertools.count()
        self._order = itertools.count()
        self.pending: list[tuple[float, int, int]] = []  # (not before, order, slot) ready to send
        self.slots: dict[int, T] = {}  # slot -> item, from the draw to its final outcome
        self.retries: dict[int, int] = {}  # busy answers per slot, for its backoff
        self.outcomes: deque = deque()  # (item, result or error) not yet taken by the caller
        self.held = 0  # items drawn (or being drawn) and not yet taken by the caller
        self.unresolved = 0  # items drawn and without a final outcome
        self.pulling = False  # a stream is drawing from the caller's iterable (outside the lock)
        self.source_done = False
        self.last_progress = time.monotonic()
        self.last_error: tuple[str, str] | None = None  # (code, message) of the latest retryable failure
        self.fatal: BaseException | None = None
        self.calls: set = set()
        self._started = False

    # --- the queue (callers hold self.cond) ---------------------------------------------------
    def finished(self) -> bool:
        return self.fatal is not None or (self.source_done and not self.pulling and self.unresolved == 0)

    def take(self) -> int | None:
        """A slot ready to send, _PULL when the caller's iterable should be drawn from, or None."""
        if self.pending and self.pending[0][0] <= time.monotonic():
            return heapq.heappop(self.pending)[2]
        if not self.source_done and not self.pulling and self.held < self.capacity:
            self.pulling = True
            self.held += 1
            return _PULL
        return None

    def wait_hint(self) -> float:
        if not self.pending:
            return 0.25
        return max(0.01, min(0.25, self.pending[0][0] - time.monotonic()))

    def put_back(self, slot: int, delay: float) -> None:
        heapq.heappush(self.pending, (time.monotonic() + delay, next(self._order), slot))
        self.cond.notify_all()

    def final(self, slot: int, outcome) -> None:
        self.outcomes.append((self.slots.pop(slot), outcome))
        self.retries.pop(slot, None)
        self.unresolved -= 1
        self.last_progress = time.monotonic()
        self.cond.notify_all()

    def give_up(self, error: BaseException) -> None:
        """Stop every stream (callers hold self.cond); returns at once, the streams end shortly."""
        if self.fatal is None:
            self.fatal = error
        calls = list(self.calls)
        self.cond.notify_all()
        # Cancelling takes the call's own lock only; the streams then end with CANCELLED.
        for call in calls:
            call.cancel()

    # --- per item (called without the lock) -------------------------------------------------------
    def pull(self) -> int | None:
        """Draw the next item from the caller's iterable: its new slot, or None when there is none."""
        try:
            item = next(self._source)
        except StopIteration:
            with self.cond:
                self.pulling, self.source_done = False, True
                self.held -= 1
                self.cond.notify_all()
            return None
        except BaseException as err:  # the caller's own iterable failed: its error ends the batch
            with self.cond:
                self.pulling = False
                self.held -= 1
                self.give_up(err)
            return None
        with self.cond:
            self.pulling = False
            slot = next(self._ids)
            self.slots[slot] = item
            if self.unresolved == 0:
                self.last_progress = time.monotonic()  # waiting on the iterable is not the server's stall
            self.unresolved += 1
            return slot

    def request(self, slot: int) -> image_input_pb2.AnalyzeImageRequest | None:
        """The request for one slot, built now; None (a final failure) if it cannot be sent."""
        try:
            return self.request_for(self.slots[slot])
        except AnalysisError as err:
            failure = err
        except (OSError, ValueError) as err:
            failure = AnalysisError("INVALID_ARGUMENT", str(err))
        with self.cond:
            self.final(slot, failure)
        return None

    def answer(self, slot: int, resp: image_input_pb2.AnalyzeImagesResponse) -> bool:
        """Handle one answer; False when it was a busy answer and the item is queued again."""
        with self.cond:
            if not resp.HasField("error"):
                self.final(slot, resp.result)
                return True
            if resp.error.retryable:  # busy, or a peer was down: the same image may succeed later
                self.retries[slot] = self.retries.get(slot, 0) + 1
                self.last_error = (resp.error.code, resp.error.message)
                self.put_back(slot, min(INITIAL_BACKOFF * 2 ** (self.retries[slot] - 1), MAX_BACKOFF))
                return False
            self.final(slot, AnalysisError(resp.error.code, resp.error.message))
            return True

    # --- the caller's side ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[T, common_pb2.AnalysisResult | AnalysisError]]:
        if self._started:
            raise RuntimeError("a Batch is iterated once")
        self._started = True
        workers = [threading.Thread(target=_worker, args=(self,), name=f"analyze-{i}", daemon=True)
                   for i in range(self.streams)]
        for worker in workers:
            worker.start()
        try:
            noticed = False
            while True:
                with self.cond:
                    while not self.outcomes and not self.finished():
                        idle = time.monotonic() - self.last_progress
                        if self.unresolved and idle > self.retry_seconds:
                            code, message = self.last_error or ("DEADLINE_EXCEEDED", "no answer")
                            self.give_up(AnalysisError(code, f"{message}; no image was answered for "
                                                             f"{self.retry_seconds:g} s"))
                            break
                        if self.unresolved and idle > NOTICE_AFTER and self.last_error and not noticed:
                            noticed = True
                            if self.notice is not None:
                                code, message = self.last_error
                                self.notice(f"{code}: {message}; retrying for up to {self.retry_seconds:g} s "
                                            "without an answer")
                        elif idle < NOTICE_AFTER:
                            noticed = False
                        self.cond.wait(0.5)
                    if self.outcomes:
                        item, outcome = self.outcomes.popleft()
                        self.held -= 1
                        self.last_progress = time.monotonic()  # room for one more: the clock starts again
                        self.cond.notify_all()
                    elif self.fatal is not None:
                        raise self.fatal
                    else:
                        return
                yield item, outcome
        finally:
            self._stop(workers)

    def _stop(self, workers: list[threading.Thread]) -> None:
        """Streams end once the server answered everything; any still open (the caller stopped
        early, or gave up) is cancelled."""
        with self.cond:
            if not self.finished():
                self.give_up(AnalysisError("CANCELLED", "the batch was closed"))
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        with self.cond:
            leftover = list(self.calls)
        for call in leftover:
            call.cancel()
        for worker in workers:
            worker.join(timeout=5)


class _Stream:
    """One AnalyzeImages call: requests drawn lazily from the shared queue, answers matched by index."""

    def __init__(self, batch: Batch, window: int):
        self.batch = batch
        self.sent: list[int] = []  # position on the stream -> slot
        self.unanswered: set[int] = set()  # positions sent and not answered yet
        self.window = window  # how many may be unanswered now (1..batch.window)
        self._streak = 0  # answers since the window last changed
        self.over = False

    def _adapt(self, busy: bool) -> None:
        """One image fewer in flight after a busy answer; one more after 2 x `window` results in a row."""
        if busy:
            self.window, self._streak = max(1, self.window - 1), 0
            return
        self._streak += 1
        if self.window < self.batch.window and self._streak >= 2 * self.window:
            self.window, self._streak = self.window + 1, 0

    def requests(self):
        batch = self.batch
        while True:
            with batch.cond:
                while True:
                    if self.over or batch.finished():
                        return  # half-close: the server answers what it holds, then ends the stream
                    if len(self.unanswered) < self.window:
                        slot = batch.take()
                        if slot is not None:
                            break
                    batch.cond.wait(batch.wait_hint())
            if slot == _PULL:
                slot = batch.pull()  # outside the lock: the caller's iterable may be slow
                if slot is None:
                    continue
            request = batch.request(slot)  # outside the lock: reading a file or encoding can be slow
            if request is None:
                continue
            with batch.cond:
                if self.over or batch.fatal is not None:
                    batch.put_back(slot, 0)
                    return
                self.unanswered.add(len(self.sent))
                self.sent.append(slot)
            yield request

    def run_once(self) -> tuple[grpc.RpcError | None, int]:
        """Open the stream and read it to its end: (the error it ended with or None, answers received)."""
        batch = self.batch
        answered = 0
        call = batch.stub.AnalyzeImages(self.requests(), timeout=batch.timeout)
        with batch.cond:
            batch.calls.add(call)
            cancel = batch.fatal is not None
        if cancel:
            call.cancel()
        try:
            for resp in call:
                with batch.cond:
                    if resp.index not in self.unanswered:
                        continue  # not ours to count twice
                    self.unanswered.discard(resp.index)
                    slot = self.sent[resp.index]
                final = batch.answer(slot, resp)
                with batch.cond:
                    self._adapt(busy=not final)
                    batch.cond.notify_all()  # a slot of the window is free
                answered += final
            return None, answered
        except grpc.RpcError as err:
            return err, answered
        finally:
            with batch.cond:
                self.over = True
                batch.calls.discard(call)
                for position in sorted(self.unanswered):
                    batch.put_back(self.sent[position], REQUEUE_DELAY)
                self.unanswered.clear()
                batch.cond.notify_all()


def _worker(batch: Batch) -> None:
    backoff = INITIAL_BACKOFF
    window = batch.window
    try:
        while True:
            with batch.cond:
                if batch.finished():
                    return
            stream = _Stream(batch, window)
            err, answered = stream.run_once()
            window = stream.window  # a busy server stays busy across reconnects
            with batch.cond:
                if batch.finished():
                    return
                if err is not None and not retryable_stream_error(err):
                    batch.give_up(AnalysisError.of(err))
                    return
                if err is not None:
                    batch.last_error = (err.code().name, err.details() or "")
                if answered:
                    backoff = INITIAL_BACKOFF
                wake = time.monotonic() + backoff
                while not batch.finished() and (left := wake - time.monotonic()) > 0:
                    batch.cond.wait(left)
            backoff = min(backoff * 2, MAX_BACKOFF)
    except Exception as err:  # never leave the caller waiting on a worker that died
        with batch.cond:
            batch.give_up(AnalysisError("INTERNAL", f"client error: {type(err).__name__}: {err}"))
