"""Micro-batching: faces of concurrent calls share one inference.

A call submits its faces and waits. One worker thread takes the oldest pending call, waits up
to `wait_ms` for more calls while the batch is below `max_size` faces, runs the models once and
hands each call its slice. A call is never split, so its faces always share a batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class Batcher:
    def __init__(self, predict, max_size: int, wait_ms: float):
        self._predict = predict
        self.max_size = max_size
        self.wait = wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def submit(self, faces: np.ndarray) -> Future:
        future: Future = Future()
        if len(faces) == 0:
            future.set_result([])
        elif self._closed.is_set():
            future.set_exception(RuntimeError("batcher is closed"))
        else:
            self._queue.put((faces, future))
        return future

    def close(self) -> None:
        self._closed.set()
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _run(self) -> None:
        carry = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is None:
                return
            pending = [item]
            count = len(item[0])
            deadline = time.monotonic() + self.wait
            while count < self.max_size:
                timeout = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # flush this batch first, then stop
                    break
                if count + len(nxt[0]) > self.max_size:
                    carry = nxt  # the next batch starts with it
                    break
                pending.append(nxt)
                count += len(nxt[0])
            self._flush(pending)

    def _flush(self, pending) -> None:
        batch = np.concatenate([faces for faces, _ in pending])
        try:
            results = self._predict(batch)
        except Exception as err:  # every waiting call learns of it; the worker lives on
            for _, future in pending:
                future.set_exception(err)
            return
        start = 0
        for faces, future in pending:
            future.set_result(results[start : start + len(faces)])
            start += len(faces)
