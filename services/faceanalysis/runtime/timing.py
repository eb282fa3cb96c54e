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


def model_infos(triples) -> list[common_pb2.ModelInfo]:
    return [common_pb2.ModelInfo(name=n, task=t, file=f) for n, t, f in triples]
