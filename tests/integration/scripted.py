"""A scripted image-input for the retry loop that `faceanalysis analyze` and Client.analyze_many share."""

from __future__ import annotations

import hashlib
import queue
import threading
import time

import grpc

from faceanalysis.v1 import image_input_pb2, image_input_pb2_grpc


def image_ref(request: image_input_pb2.AnalyzeImageRequest) -> str:
    return request.client_ref or hashlib.sha256(request.image).hexdigest()[:12]


class ScriptedImageInput(image_input_pb2_grpc.FaceAnalysisServicer):
    """A real gRPC server that misbehaves on purpose: every stream is cut with UNAVAILABLE after
    a few answers (with requests still unanswered), some first tries get a busy answer, and one
    image is refused. It records what it received and answered, per image: by client_ref, or by the
    first 12 hex digits of the image's sha256 where there is none (Client.analyze_many sends none)."""

    def __init__(self, cut_every: int = 5, busy_first=(), refuse=(), always_busy: bool = False):
        self.cut_every, self.busy_first, self.refuse = cut_every, set(busy_first), set(refuse)
        self.always_busy = always_busy
        self.lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.results: dict[str, int] = {}  # results sent per image
        self.max_unanswered = 0

    def AnalyzeImages(self, request_iterator, context):
        pending: queue.Queue = queue.Queue()
        counts = {"received": 0, "answered": 0}

        def read():
            try:
                for request in request_iterator:
                    with self.lock:
                        counts["received"] += 1
                        self.max_unanswered = max(self.max_unanswered, counts["received"] - counts["answered"])
                        ref = image_ref(request)
                        self.received[ref] = self.received.get(ref, 0) + 1
                    pending.put(request)
            except grpc.RpcError:
                pass  # the stream was cut
            pending.put(None)  # the client half-closed: answer what is left, then end the stream

        threading.Thread(target=read, daemon=True).start()
        index = 0
        while True:
            request = pending.get()
            if request is None:
                return
            time.sleep(0.01)  # let the client send ahead, as a real server's work would
            ref = image_ref(request)
            reply = image_input_pb2.AnalyzeImagesResponse(index=index, client_ref=ref)
            with self.lock:
                if self.always_busy or (ref in self.busy_first and self.received[ref] == 1):
                    reply.error.code, reply.error.message = "RESOURCE_EXHAUSTED", "image-input is at capacity"
                    reply.error.retryable = True
                elif ref in self.refuse:
                    reply.error.code, reply.error.message = "INVALID_ARGUMENT", "not a recognised image"
                else:
                    reply.result.analysis_id = f"{index:032x}"
                    reply.result.image.sha256 = hashlib.sha256(request.image).hexdigest()
                    self.results[ref] = self.results.get(ref, 0) + 1
                counts["answered"] += 1
            index += 1
            yield reply
            if index % self.cut_every == 0:
                time.sleep(0.05)  # the client has sent more by now: those are lost with the stream
                context.abort(grpc.StatusCode.UNAVAILABLE, "max connection age")
