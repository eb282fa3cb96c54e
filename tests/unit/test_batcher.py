"""Micro-batching: concurrent calls share inferences, each call gets its own answers back, each
task's model runs only over the faces of the calls that want it, and the queue sheds load
(bounded size, expired and cancelled calls never reach the models)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import REGISTRY

from faceanalysis.face_attributes.batcher import Batcher, DeadlineExpired, QueueFull, plan


class Recorder:
    """Wraps a predict function and records batches; answers are the inputs' first pixel."""

    def __init__(self, delay: float = 0.0):
        self.sizes = []
        self.seen = []  # every answer value that reached predict
        self.gate = threading.Event()
        self.started = threading.Event()
        self.delay = delay

    def __call__(self, batch, tasks=None):
        self.started.set()
        self.gate.wait(5)  # hold the first batch so that later calls queue up behind it
        if self.delay:
            time.sleep(self.delay)
        self.sizes.append(len(batch))
        values = [float(x[0, 0, 0]) for x in batch]
        self.seen.extend(values)
        return values


def faces(start: int, n: int) -> np.ndarray:
    return np.stack([np.full((2, 2, 3), start + i, np.float32) for i in range(n)])


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("faceanalysis_batch_dropped_faces_total", {"reason": reason}) or 0.0


def queue_gauge() -> float:
    return REGISTRY.get_sample_value("faceanalysis_batch_queue_faces")


def hold_worker(recorder: Recorder, batcher: Batcher) -> object:
    """Occupy the worker with a one-face batch that blocks on the recorder's gate."""
    first = batcher.submit(faces(-1000, 1))
    assert recorder.started.wait(5), "the worker took the first batch"
    return first


def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# --- micro-batching ------------------------------------------------------------------------


def test_concurrent_calls_share_batches_and_get_their_own_results():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=32, wait_ms=50, max_queued_faces=100)
    try:
        futures = [batcher.submit(faces(100 * k, 3)) for k in range(6)]
        recorder.gate.set()
        results = [f.result(5) for f in futures]
    finally:
        batcher.close()
    assert results == [[100.0 * k + i for i in range(3)] for k in range(6)]
    assert len(recorder.sizes) < 6, "calls were merged"
    assert sum(recorder.sizes) == 18


def test_batches_respect_max_size_and_never_split_a_call():
    recorder = Recorder()
    recorder.gate.set()
    batcher = Batcher(recorder, max_size=5, wait_ms=50, max_queued_faces=100)
    try:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda k: batcher.submit(faces(10 * k, 2)).result(5), range(8)))
    finally:
        batcher.close()
    assert outs == [[10.0 * k, 10.0 * k + 1] for k in range(8)]
    assert max(recorder.sizes) <= 5
    assert all(size % 2 == 0 for size in recorder.sizes)


def test_a_call_larger_than_max_size_runs_alone_in_pieces_of_max_size():
    # A group photo's faces are not merged with other calls, and the models never see more
    # than max_size faces at once: that bounds the activations, and so the pod's peak memory.
    recorder = Recorder()
    recorder.gate.set()
    batcher = Batcher(recorder, max_size=4, wait_ms=0, max_queued_faces=100)
    try:
        assert batcher.submit(faces(0, 11)).result(5) == [float(i) for i in range(11)]
    finally:
        batcher.close()
    assert recorder.sizes == [4, 4, 3]


def test_a_failing_batch_fails_its_calls_and_the_worker_lives_on():
    calls = []

    def predict(batch, tasks):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return [0.0] * len(batch)

    batcher = Batcher(predict, max_size=8, wait_ms=0, max_queued_faces=100)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            batcher.submit(faces(0, 1)).result(5)
        assert batcher.submit(faces(0, 2)).result(5) == [0.0, 0.0]
        assert batcher.submit(np.zeros((0, 2, 2, 3), np.float32)).result(5) == []
    finally:
        batcher.close()


def test_empty_input_resolves_at_once_even_when_the_queue_is_full():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=2)
    try:
        first = hold_worker(recorder, batcher)
        batcher.submit(faces(0, 2))
        future = batcher.submit(np.zeros((0, 2, 2, 3), np.float32))
        assert future.done() and future.result() == []
        recorder.gate.set()
        first.result(5)
    finally:
        recorder.gate.set()
        batcher.close()


# --- shedding: the queue bound -----------------------------------------------------------------


def test_queue_bound_raises_queue_full_and_counts_nothing():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=4, wait_ms=0, max_queued_faces=5)
    try:
        first = hold_worker(recorder, batcher)  # taken into the running batch: not queued
        assert batcher.queued_faces == 0
        accepted = [batcher.submit(faces(10, 3)), batcher.submit(faces(20, 2))]
        assert batcher.queued_faces == 5 and queue_gauge() == 5
        before = (dropped("expired"), dropped("cancelled"))
        with pytest.raises(QueueFull, match=r"5 faces are queued.*limit of 5.*retry later"):
            batcher.submit(faces(30, 1))
        with pytest.raises(QueueFull):
            batcher.submit(faces(40, 6))  # larger than the whole queue: never fits
        assert batcher.queued_faces == 5 and queue_gauge() == 5, "a refused call counts nothing"
        assert (dropped("expired"), dropped("cancelled")) == before
        recorder.gate.set()
        assert first.result(5) == [-1000.0]
        assert [f.result(5) for f in accepted] == [[10.0, 11.0, 12.0], [20.0, 21.0]]
        # The queue drained, so there is room again.
        assert batcher.submit(faces(30, 1)).result(5) == [30.0]
    finally:
        recorder.gate.set()
        batcher.close()
    assert 40.0 not in recorder.seen and recorder.seen.count(30.0) == 1
    assert queue_gauge() == 0


def test_sustained_overload_never_exceeds_the_bound():
    bound = 12
    observed = []
    stop = threading.Event()

    recorder = Recorder(delay=0.01)  # predict is slower than the producers
    recorder.gate.set()
    batcher = Batcher(recorder, max_size=4, wait_ms=1, max_queued_faces=bound)

    def watch():
        while not stop.is_set():
            observed.append((batcher.queued_faces, queue_gauge()))
            time.sleep(0.0005)

    accepted, refused = [], [0]
    lock = threading.Lock()

    def produce(k):
        for i in range(60):
            try:
                future = batcher.submit(faces(1000 * k + 10 * i, 1 + (i % 3)))
            except QueueFull:
                with lock:
                    refused[0] += 1
                continue
            with lock:
                accepted.append(future)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(produce, range(6)))
        results = [f.result(10) for f in accepted]
    finally:
        stop.set()
        watcher.join()
        batcher.close()
    assert refused[0] > 0, "the producers outran predict"
    assert len(results) == len(accepted) and all(results)
    assert max(q for q, _ in observed) <= bound
    assert max(g for _, g in observed) <= bound
    assert max(recorder.sizes) <= 4
    assert sum(recorder.sizes) == sum(len(r) for r in results)


# --- shedding: expired and cancelled calls -------------------------------------------------------


def test_expired_faces_never_reach_predict():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=100)
    before = dropped("expired")
    try:
        first = hold_worker(recorder, batcher)
        soon = batcher.submit(faces(10, 3), deadline=time.monotonic() + 0.05)
        later = batcher.submit(faces(20, 2), deadline=time.monotonic() + 60)
        forever = batcher.submit(faces(30, 1))
        time.sleep(0.1)  # `soon` expires while the worker is busy
        recorder.gate.set()
        first.result(5)
        with pytest.raises(DeadlineExpired):
            soon.result(5)
        assert later.result(5) == [20.0, 21.0]
        assert forever.result(5) == [30.0]
    finally:
        recorder.gate.set()
        batcher.close()
    assert not {10.0, 11.0, 12.0} & set(recorder.seen)
    assert dropped("expired") - before == 3
    assert queue_gauge() == 0


def test_a_deadline_already_past_at_submit_fails_at_once():
    recorder = Recorder()
    recorder.gate.set()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=100)
    before = dropped("expired")
    try:
        future = batcher.submit(faces(10, 2), deadline=time.monotonic() - 1)
        assert future.done()
        with pytest.raises(DeadlineExpired):
            future.result()
        assert batcher.queued_faces == 0
    finally:
        batcher.close()
    assert recorder.seen == []
    assert dropped("expired") - before == 2


def test_cancelled_futures_never_reach_predict_and_free_their_place():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=6)
    before = dropped("cancelled")
    try:
        first = hold_worker(recorder, batcher)
        gone = batcher.submit(faces(10, 4))
        kept = batcher.submit(faces(20, 2))
        assert batcher.queued_faces == 6 and queue_gauge() == 6
        with pytest.raises(QueueFull):
            batcher.submit(faces(30, 3))
        assert gone.cancel()
        # The cancelled call left the queue at once: its place is free before the worker runs.
        assert batcher.queued_faces == 2 and queue_gauge() == 2
        assert dropped("cancelled") - before == 4
        third = batcher.submit(faces(30, 3))
        recorder.gate.set()
        first.result(5)
        assert kept.result(5) == [20.0, 21.0]
        assert third.result(5) == [30.0, 31.0, 32.0]
        with pytest.raises(CancelledError):
            gone.result(0)
    finally:
        recorder.gate.set()
        batcher.close()
    assert not {10.0, 11.0, 12.0, 13.0} & set(recorder.seen)
    assert dropped("cancelled") - before == 4, "counted once"
    assert queue_gauge() == 0


def test_a_running_batch_cannot_be_cancelled():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=100)
    before = dropped("cancelled")
    try:
        first = hold_worker(recorder, batcher)
        assert not first.cancel(), "its faces are already in the models"
        recorder.gate.set()
        assert first.result(5) == [-1000.0]
    finally:
        recorder.gate.set()
        batcher.close()
    assert dropped("cancelled") == before


def test_cancelled_from_an_asyncio_caller_is_dropped():
    """The async server awaits asyncio.wrap_future(future); cancelling that task cancels the future."""
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_size=8, wait_ms=0, max_queued_faces=100)
    before = dropped("cancelled")

    async def scenario():
        task = asyncio.ensure_future(asyncio.wrap_future(batcher.submit(faces(50, 2))))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        first = hold_worker(recorder, batcher)
        asyncio.run(scenario())
        wait_until(lambda: batcher.queued_faces == 0)
        recorder.gate.set()
        first.result(5)
        assert batcher.submit(faces(60, 1)).result(5) == [60.0]
    finally:
        recorder.gate.set()
        batcher.close()
    assert 50.0 not in recorder.seen and 51.0 not in recorder.seen
    assert dropped("cancelled") - before == 2


def test_queue_gauge_follows_the_queue():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=3, wait_ms=0, max_queued_faces=100)
    try:
        assert queue_gauge() == 0
        first = hold_worker(recorder, batcher)
        assert queue_gauge() == 0, "faces in a running batch are not queued"
        a = batcher.submit(faces(10, 2))
        assert queue_gauge() == 2
        b = batcher.submit(faces(20, 3))
        assert queue_gauge() == 5
        recorder.gate.set()
        assert a.result(5) == [10.0, 11.0] and b.result(5) == [20.0, 21.0, 22.0]
        first.result(5)
        wait_until(lambda: queue_gauge() == 0)
    finally:
        recorder.gate.set()
        batcher.close()
    assert recorder.sizes == [1, 2, 3], "b (3 faces) did not fit beside a (2) in a batch of 3"


# --- close --------------------------------------------------------------------------------


def test_close_fails_the_waiting_and_stops_the_worker():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=2, wait_ms=0, max_queued_faces=100)
    first = hold_worker(recorder, batcher)
    waiting = [batcher.submit(faces(10 * k, 2)) for k in range(1, 4)]
    assert queue_gauge() == 6
    closer = threading.Thread(target=batcher.close)
    closer.start()
    for future in waiting:
        with pytest.raises(RuntimeError, match="batcher is closed"):
            future.result(5)
    assert queue_gauge() == 0
    recorder.gate.set()  # the running batch still finishes
    closer.join(5)
    assert first.result(5) == [-1000.0]
    assert not batcher._worker.is_alive()
    assert recorder.seen == [-1000.0], "nothing queued ran after close"
    with pytest.raises(RuntimeError, match="batcher is closed"):
        batcher.submit(faces(0, 1)).result(1)


# --- tasks: each model over the faces that want it -------------------------------------------------


class TaskRecorder:
    """Records each run (its tasks and the faces' values) and answers, per face, task -> value."""

    def __init__(self):
        self.runs: list[tuple[tuple[str, ...], list[float]]] = []

    def __call__(self, batch, tasks):
        values = [float(x[0, 0, 0]) for x in batch]
        self.runs.append((tuple(tasks), values))
        return [{task: value for task in tasks} for value in values]

    def faces_seen_by(self, task: str) -> list[float]:
        return [v for tasks, values in self.runs if task in tasks for v in values]


def test_plan_runs_each_task_once_over_the_calls_that_want_it():
    order = ("age", "gender", "emotion")
    full, emotion = frozenset(order), frozenset({"emotion"})
    assert plan([full, full], order) == [(order, (0, 1))]
    assert plan([full, emotion], order) == [(("age", "gender"), (0,)), (("emotion",), (0, 1))]
    assert plan([emotion, frozenset({"age"}), emotion], order) == [(("age",), (1,)), (("emotion",), (0, 2))]


def test_an_emotion_only_call_batched_with_a_full_one_never_reaches_age_or_gender():
    recorder = TaskRecorder()
    started, gate = threading.Event(), threading.Event()

    def predict(batch, tasks):
        started.set()
        gate.wait(5)  # hold the first batch so that the next two calls share one
        return recorder(batch, tasks)

    batcher = Batcher(predict, max_size=32, wait_ms=50, max_queued_faces=100)
    try:
        first = batcher.submit(faces(-1000, 1))
        assert started.wait(5), "the worker took the first batch"
        full = batcher.submit(faces(10, 2))
        emotion_only = batcher.submit(faces(20, 3), tasks={"emotion"})
        gate.set()
        first.result(5)
        full_answer, emotion_answer = full.result(5), emotion_only.result(5)
    finally:
        gate.set()
        batcher.close()
    assert full_answer == [{"age": v, "gender": v, "emotion": v} for v in (10.0, 11.0)]
    assert emotion_answer == [{"emotion": v} for v in (20.0, 21.0, 22.0)]
    assert recorder.faces_seen_by("age") == recorder.faces_seen_by("gender") == [-1000.0, 10.0, 11.0]
    assert recorder.faces_seen_by("emotion") == [-1000.0, 10.0, 11.0, 20.0, 21.0, 22.0]
    # The shared batch: age and gender together over the full call, emotion once over both calls.
    assert recorder.runs[1:] == [(("age", "gender"), [10.0, 11.0]), (("emotion",), [10.0, 11.0, 20.0, 21.0, 22.0])]


def test_each_run_is_cut_into_pieces_of_max_size():
    recorder = TaskRecorder()
    batcher = Batcher(recorder, max_size=2, wait_ms=0, max_queued_faces=100)
    try:
        answer = batcher.submit(faces(0, 5), tasks=["gender"]).result(5)
    finally:
        batcher.close()
    assert answer == [{"gender": float(i)} for i in range(5)]
    assert [(tasks, len(values)) for tasks, values in recorder.runs] == [(("gender",), 2), (("gender",), 2),
                                                                         (("gender",), 1)]


def test_unknown_or_no_tasks_are_refused_at_submit():
    batcher = Batcher(TaskRecorder(), max_size=2, wait_ms=0, max_queued_faces=100)
    try:
        with pytest.raises(ValueError, match="tasks must be some of age, gender, emotion"):
            batcher.submit(faces(0, 1), tasks={"landmarks"})
        with pytest.raises(ValueError):
            batcher.submit(faces(0, 1), tasks=())
        assert batcher.queued_faces == 0
    finally:
        batcher.close()
