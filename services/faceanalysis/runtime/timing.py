"""Stage timings that travel with a result."""

from __future__ import annotations

import time
from contextlib import contextmanager

from faceanalysis.v1 import common_pb2


@contextmanager
def stage(timings: list, name: str):
    """Append a StageTiming for the enclosed block to `timings`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings.append(common_pb2.StageTiming(stage=name, seconds=time.perf_counter() - start))


def model_infos(served) -> list[common_pb2.ModelInfo]:
    """ModelInfo messages for models.ServedModel items: file, sha256 and the parameters that shape
    the model's answers."""
    return [common_pb2.ModelInfo(name=m.name, task=m.task, file=m.file, sha256=m.sha256, parameters=m.parameters)
            for m in served]
