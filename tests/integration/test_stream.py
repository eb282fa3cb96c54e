"""AnalyzeImages: every image answered once, errors per item, bounded in-flight work."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from faceanalysis.image_input.server import FaceAnalysisServicer
from faceanalysis.runtime import config
from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.support import image

PHOTOS = ["face_recognition/obama.jpg", "misc/t1.jpg", "dlib/dogs.jpg", "face_recognition/two_people.jpg",
          "misc/astronaut.png"]
EXPECTED_FACES = [1, 6, 0, 2, 1]


def test_stream_answers_each_image_once_with_per_item_errors(api):
    requests = [image_input_pb2.AnalyzeImageRequest(image=image(p).read_bytes(), client_ref=p,
                                                    options=common_pb2.AnalysisOptions(no_store=True))
                for p in PHOTOS]
    requests.insert(2, image_input_pb2.AnalyzeImageRequest(image=b"not an image", client_ref="bad"))
    responses = list(api.AnalyzeImages(iter(requests), timeout=180))
    assert sorted(r.index for r in responses) == list(range(len(requests)))
    by_index = {r.index: r for r in responses}
    for index, request in enumerate(requests):
        assert by_index[index].client_ref == request.client_ref
    assert by_index[2].error.code == "INVALID_ARGUMENT"
    faces = [len(by_index[i].result.faces) for i in range(len(requests)) if i != 2]
    assert faces == EXPECTED_FACES


class SlowPipeline:
    """Stands in for the peers only to make analysis slow and observable; the stream logic is real."""

    def __init__(self):
        self.active = 0
        self.peak = 0
        self.started = 0
        self.finished = 0

    async def analyze(self, data, options, deadline=None, *, tenant):
        self.started += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.active -= 1
        self.finished += 1
        return common_pb2.AnalysisResult(analysis_id=data.decode())


class Context:
    def time_remaining(self):
        return None


async def endless_requests():
    i = 0
    while True:
        i += 1
        yield image_input_pb2.AnalyzeImageRequest(image=str(i).encode())


def servicer_with(pipeline, **settings) -> FaceAnalysisServicer:
    return FaceAnalysisServicer(config.Settings(**settings), pipeline)


def test_stream_backpressure_bounds_reads_and_work():
    limit = 3
    pipeline = SlowPipeline()
    servicer = servicer_with(pipeline, stream_max_in_flight=limit)
    counts = {"pulled": 0, "emitted": 0}
    ahead = []

    async def requests():
        for i in range(30):
            counts["pulled"] += 1
            ahead.append(counts["pulled"] - counts["emitted"])
            yield image_input_pb2.AnalyzeImageRequest(image=str(i).encode())

    async def consume():
        seen = []
        async for response in servicer.AnalyzeImages(requests(), Context()):
            counts["emitted"] += 1
            seen.append(response.index)
            await asyncio.sleep(0.02)  # a slow reader must hold the server back too
        return seen

    seen = asyncio.run(consume())
    assert sorted(seen) == list(range(30))
    assert pipeline.peak <= limit
    # The reader never runs more than `limit` requests ahead of what the client has received
    # (+1: the request being pulled when a slot frees).
    assert max(ahead) <= limit + 1


def test_client_going_away_cancels_the_stream_work():
    """What gRPC does when a client cancels: the handler task is cancelled. Work in flight for
    that stream is cancelled with it, and nothing more is read or started."""
    pipeline = SlowPipeline()
    servicer = servicer_with(pipeline, stream_max_in_flight=2)

    async def scenario():
        async def consume():
            async for _ in servicer.AnalyzeImages(endless_requests(), Context()):
                pass

        task = asyncio.create_task(consume())
        while pipeline.finished < 2 or pipeline.active == 0:  # two answered, more in flight
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = pipeline.started
        await asyncio.sleep(0.3)
        return started

    started = asyncio.run(scenario())
    assert pipeline.active == 0, "in-flight items were cancelled"
    assert pipeline.started == started, "nothing new started after the client left"
    assert pipeline.finished < started, "cancelled items did not run to the end"


def test_draining_stops_reading_answers_in_flight_then_says_reconnect():
    pipeline = SlowPipeline()
    servicer = servicer_with(pipeline, stream_max_in_flight=3)

    class AbortingContext(Context):
        async def abort(self, code, message, trailing_metadata=()):
            raise grpc.RpcError(code, message)

    async def scenario():
        answers = []
        with pytest.raises(grpc.RpcError) as ended:
            async for answer in servicer.AnalyzeImages(endless_requests(), AbortingContext()):
                answers.append(answer)
                if len(answers) == 5:
                    await servicer.drain()
        return answers, ended.value

    answers, ended = asyncio.run(scenario())
    assert ended.args[0] == grpc.StatusCode.UNAVAILABLE
    assert "reconnect" in ended.args[1]
    # Every image that was started got its answer before the stream ended.
    assert len(answers) == pipeline.started == pipeline.finished
