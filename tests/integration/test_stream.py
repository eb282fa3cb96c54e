"""AnalyzeImages: every image answered once, errors per item, bounded in-flight work."""

from __future__ import annotations

import threading
import time

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
        self.lock = threading.Lock()

    def analyze(self, data, options, deadline=None):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return common_pb2.AnalysisResult(analysis_id=data.decode())


class Context:
    def is_active(self):
        return True

    def time_remaining(self):
        return None


def test_stream_backpressure_bounds_reads_and_work():
    limit = 3
    settings = config.Settings(stream_max_in_flight=limit)
    pipeline = SlowPipeline()
    servicer = FaceAnalysisServicer(settings, pipeline)
    pulled = 0
    emitted = 0
    ahead = []

    def requests():
        nonlocal pulled
        for i in range(30):
            pulled += 1
            ahead.append(pulled - emitted)
            yield image_input_pb2.AnalyzeImageRequest(image=str(i).encode())

    seen = []
    for response in servicer.AnalyzeImages(requests(), Context()):
        emitted += 1
        seen.append(response.index)
        time.sleep(0.02)  # a slow reader must hold the server back too
    assert sorted(seen) == list(range(30))
    assert pipeline.peak <= limit
    # The reader never runs more than `limit` requests ahead of what the client has received
    # (+1: the request being pulled when a slot frees).
    assert max(ahead) <= limit + 1


def test_client_going_away_frees_the_reader():
    settings = config.Settings(stream_max_in_flight=2)
    servicer = FaceAnalysisServicer(settings, SlowPipeline())

    def endless():
        i = 0
        while True:
            i += 1
            yield image_input_pb2.AnalyzeImageRequest(image=str(i).encode())

    stream = servicer.AnalyzeImages(endless(), Context())
    next(stream)
    next(stream)
    stream.close()  # what gRPC does when the client cancels
    deadline = time.monotonic() + 5
    while any(t.name == "stream-reader" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "stream-reader" for t in threading.enumerate())
