"""Micro-batching: concurrent calls share inferences, each call gets its own answers back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from faceanalysis.face_attributes.batcher import Batcher


class Recorder:
    """Wraps a predict function and records batch sizes; answers are the inputs' first pixel."""

    def __init__(self):
        self.sizes = []
        self.gate = threading.Event()

    def __call__(self, batch):
        self.gate.wait(5)  # hold the first batch so that later calls queue up behind it
        self.sizes.append(len(batch))
        return [float(x[0, 0, 0]) for x in batch]


def faces(start: int, n: int) -> np.ndarray:
    return np.stack([np.full((2, 2, 3), start + i, np.float32) for i in range(n)])


def test_concurrent_calls_share_batches_and_get_their_own_results():
    recorder = Recorder()
    batcher = Batcher(recorder, max_size=32, wait_ms=50)
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
    batcher = Batcher(recorder, max_size=5, wait_ms=50)
    try:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda k: batcher.submit(faces(10 * k, 2)).result(5), range(8)))
    finally:
        batcher.close()
    assert outs == [[10.0 * k, 10.0 * k + 1] for k in range(8)]
    assert max(recorder.sizes) <= 5
    assert all(size % 2 == 0 for size in recorder.sizes)


def test_a_failing_batch_fails_its_calls_and_the_worker_lives_on():
    calls = []

    def predict(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return [0.0] * len(batch)

    batcher = Batcher(predict, max_size=8, wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            batcher.submit(faces(0, 1)).result(5)
        assert batcher.submit(faces(0, 2)).result(5) == [0.0, 0.0]
        assert batcher.submit(np.zeros((0, 2, 2, 3), np.float32)).result(5) == []
    finally:
        batcher.close()
