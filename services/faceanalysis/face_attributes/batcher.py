"""Micro-batching: faces of concurrent calls share one inference, and a full queue sheds load.

A call submits its faces and gets a `concurrent.futures.Future`. One worker thread forms
batches: when the oldest waiting call is there, it waits up to `wait_ms` for more calls while
the queue holds fewer than `max_size` faces, then takes calls from the front while they fit in
`max_size` faces, runs the models once and hands each call its slice. Calls are never split
across batches; a call larger than `max_size` gets a batch of its own, which the models see in
pieces of at most `max_size` faces, one after the other: a model's activations grow with the
faces it runs at once (VGG-16 age and gender: 1.38 GB peak RSS at 4 faces, 2.1 GB at 32), so a
group photo must not be allowed to set the pod's memory peak.

Tasks: each call names the tasks (models) it wants, all of them by default, and a batch mixes
calls that want different ones. Each task's model runs once per batch over exactly the faces of
the calls that want it: tasks wanted by the same calls run together, as one `predict(faces,
tasks)` (see `plan`). A batch of full calls is thus one predict over all its faces, as before; an
emotion-only call batched with a full one adds its faces to the emotion run only, and the age and
gender models never see them. A call that spans several runs gets, per face, the union of the
mappings its runs answered (predict answers one mapping, task -> value, per face).

Load shedding:
- At most `max_queued_faces` faces wait (submitted, not yet taken into a running batch).
  A call that would exceed it gets `QueueFull` at once, so the server can answer
  RESOURCE_EXHAUSTED instead of letting latency grow without bound.
- A call whose future is cancelled (the async server cancels it when its client goes away)
  leaves the queue at once, freeing its faces and its place.
- A call whose deadline (a `time.monotonic()` value) passes while it waits gets
  `DeadlineExpired` and is never run.
Dropped faces are counted in `faceanalysis_batch_dropped_faces_total{reason}`, and
`faceanalysis_batch_queue_faces` is the number of faces waiting.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

import numpy as np

from faceanalysis.runtime import metrics
from faceanalysis.runtime.options import ATTRIBUTE_TASKS

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds too many faces to take this call now; the caller should retry later."""


class DeadlineExpired(Exception):
    """The call's deadline passed before its faces were taken into a batch."""


class _Entry:
    __slots__ = ("faces", "n", "future", "deadline", "queued", "tasks")

    def __init__(self, faces: np.ndarray, future: Future, deadline: float | None, tasks: frozenset[str]):
        self.faces = faces
        self.n = len(faces)
        self.future = future
        self.deadline = deadline
        self.queued = True  # in the queue; only changed under the batcher's lock
        self.tasks = tasks


def plan(wanted: Sequence[frozenset[str]], order: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """The runs for a batch whose calls want `wanted[i]`: (tasks, indices of the calls whose faces
    they run over), one run per distinct set of calls, tasks in `order`, runs in the order of their
    first task. Each task is in exactly one run, over exactly the calls that want it."""
    runs: dict[tuple[int, ...], list[str]] = {}
    for task in order:
        calls = tuple(i for i, tasks in enumerate(wanted) if task in tasks)
        if calls:
            runs.setdefault(calls, []).append(task)
    return [(tuple(tasks), calls) for calls, tasks in runs.items()]


class Batcher:
    def __init__(self, predict, max_size: int, wait_ms: float, max_queued_faces: int,
                 tasks: Sequence[str] = ATTRIBUTE_TASKS):
        """`predict(faces, tasks)` answers for each face (one per row of `faces`); `tasks` are
        every task a call may want, in the order their models run."""
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if max_queued_faces < 1:
            raise ValueError(f"max_queued_faces must be at least 1, got {max_queued_faces}")
        self._predict = predict
        self.tasks = tuple(tasks)
        self.max_size = max_size
        self.wait = max(0.0, wait_ms) / 1000.0
        self.max_queued_faces = max_queued_faces
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queued_faces = 0
        self._closed = False
        metrics.BATCH_QUEUE_FACES.set(0)
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    @property
    def queued_faces(self) -> int:
        """Faces submitted and not yet taken into a running batch."""
        with self._lock:
            return self._queued_faces

    def submit(self, faces: np.ndarray, deadline: float | None = None, tasks: Iterable[str] | None = None) -> Future:
        """Queue a call's faces for `tasks` (default: all); the future resolves to one result per
        face, in order.

        Raises QueueFull (synchronously, counting nothing) when the faces do not fit in the queue.
        The future fails with DeadlineExpired if `deadline` (time.monotonic()) passes before the
        faces are taken into a batch, and with RuntimeError once the batcher is closed.
        Cancelling the future before its batch runs drops its faces.
        """
        wanted = frozenset(self.tasks if tasks is None else tasks)
        if not wanted or not wanted <= set(self.tasks):
            raise ValueError(f"tasks must be some of {', '.join(self.tasks)}; got {sorted(wanted)}")
        future: Future = Future()
        n = len(faces)
        if n == 0:
            future.set_result([])
            return future
        entry = _Entry(faces, future, deadline, wanted)
        future.add_done_callback(lambda f, entry=entry: self._on_done(entry))
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("batcher is closed"))
                return future
            if self._queued_faces + n > self.max_queued_faces:
                raise QueueFull(
                    f"face-attributes is overloaded: {self._queued_faces} faces are queued for inference "
                    f"and this call brings {n}, over the limit of {self.max_queued_faces}; retry later"
                )
            if deadline is not None and deadline <= time.monotonic():
                expired, entry.queued = True, False
            else:
                expired = False
                self._queue.append(entry)
                self._queued_faces += n
                metrics.BATCH_QUEUE_FACES.set(self._queued_faces)
                self._wake.notify()
        if expired:
            self._fail_expired([entry])
        return future

    def close(self) -> None:
        """Fail every call still queued, let a running batch finish, and stop the worker."""
        with self._lock:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            for entry in dropped:
                entry.queued = False
            self._queued_faces = 0
            metrics.BATCH_QUEUE_FACES.set(0)
            self._wake.notify_all()
        cancelled = 0
        for entry in dropped:
            if entry.future.set_running_or_notify_cancel():
                entry.future.set_exception(RuntimeError("batcher is closed"))
            else:
                cancelled += entry.n
        if cancelled:
            metrics.BATCH_DROPPED_FACES.labels("cancelled").inc(cancelled)
        if self._worker is not threading.current_thread():
            self._worker.join(timeout=5)

    # --- internals -------------------------------------------------------------------------

    def _dequeue(self, entry: _Entry) -> None:
        """Under the lock: the entry leaves the queue's accounting."""
        entry.queued = False
        self._queued_faces -= entry.n
        metrics.BATCH_QUEUE_FACES.set(self._queued_faces)

    def _on_done(self, entry: _Entry) -> None:
        """Future callback: a call cancelled while queued leaves the queue now, not at its turn."""
        if not entry.future.cancelled():
            return  # resolved by the worker or close(); nothing to undo
        with self._lock:
            if not entry.queued:
                return  # the worker or close() already took it out (and counted it)
            self._queue.remove(entry)
            self._dequeue(entry)
            entry.faces = None  # free the pixels now
        entry.future.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED, wakes wait()
        metrics.BATCH_DROPPED_FACES.labels("cancelled").inc(entry.n)

    def _fail_expired(self, entries: list[_Entry]) -> None:
        expired = cancelled = 0
        for entry in entries:
            entry.faces = None
            if entry.future.set_running_or_notify_cancel():
                entry.future.set_exception(DeadlineExpired("the call's deadline passed before its faces were run"))
                expired += entry.n
            else:
                cancelled += entry.n
        if expired:
            metrics.BATCH_DROPPED_FACES.labels("expired").inc(expired)
        if cancelled:
            metrics.BATCH_DROPPED_FACES.labels("cancelled").inc(cancelled)

    def _take(self) -> tuple[list[_Entry], list[_Entry], int]:
        """Under the lock: drop expired calls anywhere in the queue, then take calls from the
        front while they fit in max_size faces. Returns (batch, expired, cancelled faces)."""
        now = time.monotonic()
        expired = [e for e in self._queue if e.deadline is not None and e.deadline <= now]
        if expired:
            for entry in expired:
                self._dequeue(entry)
            self._queue = collections.deque(e for e in self._queue if e.queued)
        batch: list[_Entry] = []
        count = cancelled = 0
        while self._queue:
            entry = self._queue[0]
            if batch and count + entry.n > self.max_size:
                break  # it starts the next batch
            self._queue.popleft()
            self._dequeue(entry)
            # From here on the future cannot be cancelled; if it already was, it is dropped.
            if not entry.future.set_running_or_notify_cancel():
                entry.faces = None
                cancelled += entry.n
                continue
            batch.append(entry)
            count += entry.n
        return batch, expired, cancelled

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return  # close() failed whatever was queued
                # The oldest call is here: give concurrent calls `wait` to join it.
                window_end = time.monotonic() + self.wait
                while not self._closed and self._queued_faces < self.max_size:
                    remaining = window_end - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                if self._closed:
                    return
                batch, expired, cancelled = self._take()
            if expired:
                self._fail_expired(expired)
            if cancelled:
                metrics.BATCH_DROPPED_FACES.labels("cancelled").inc(cancelled)
            if batch:
                self._flush(batch)

    def _flush(self, batch: list[_Entry]) -> None:
        runs = plan([e.tasks for e in batch], self.tasks)
        # A call's pixels are let go once the last run over them has copied them.
        last_run = {i: r for r, (_, calls) in enumerate(runs) for i in calls}
        answers: list[list | None] = [None] * len(batch)
        try:
            for r, (tasks, calls) in enumerate(runs):
                members = [batch[i] for i in calls]
                inputs = members[0].faces if len(members) == 1 else np.concatenate([e.faces for e in members])
                for i in calls:
                    if last_run[i] == r:
                        batch[i].faces = None
                results = []
                for start in range(0, len(inputs), self.max_size):
                    results.extend(self._predict(inputs[start : start + self.max_size], tasks))
                del inputs
                if len(results) != sum(e.n for e in members):
                    raise RuntimeError(f"the models returned {len(results)} results for "
                                       f"{sum(e.n for e in members)} faces")
                start = 0
                for i in calls:
                    mine = results[start : start + batch[i].n]
                    start += batch[i].n
                    # A call in several runs: per face, the union of what each run answered.
                    answers[i] = mine if answers[i] is None else [{**a, **b} for a, b in zip(answers[i], mine)]
        except Exception as err:  # every call of the batch learns of it; the worker lives on
            log.warning("inference batch failed: %s", err)
            for entry in batch:
                entry.faces = None
                entry.future.set_exception(err)
            return
        for entry, answer in zip(batch, answers):
            entry.future.set_result(answer)
