"""image-input gRPC service: the public faceanalysis.v1.FaceAnalysis API."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from faceanalysis.image_input.decode import InputError
from faceanalysis.image_input.pipeline import Pipeline, peer_error
from faceanalysis.runtime import config, results, services
from faceanalysis.runtime.logging import current_request_id, log as log_fields, reset_request_id, set_request_id
from faceanalysis.runtime.server import ServiceApp
from faceanalysis.v1 import data_storage_pb2, image_input_pb2, image_input_pb2_grpc

log = logging.getLogger(__name__)
_END = object()


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class FaceAnalysisServicer(image_input_pb2_grpc.FaceAnalysisServicer):
    def __init__(self, settings: config.Settings, pipeline: Pipeline):
        self.settings, self.pipeline = settings, pipeline

    def AnalyzeImage(self, request, context):
        try:
            result = self.pipeline.analyze(request.image, request.options, _deadline(context))
        except InputError as err:
            log_fields(log, logging.INFO, "refused", code=err.code.name, reason=err.message, bytes=len(request.image))
            context.abort(err.code, err.message)
        log_fields(log, logging.INFO, "analyzed", analysis_id=result.analysis_id, faces=len(result.faces),
                   stored=result.stored, cached=result.cached, bytes=len(request.image))
        return image_input_pb2.AnalyzeImageResponse(result=result)

    def AnalyzeImages(self, request_iterator, context):
        """At most `stream_max_in_flight` images of a stream are read and analysed at once.

        The reader takes a slot before it reads the next request and a slot is given back only
        after its response went out, so a client that sends faster than we analyse (or reads
        slower) is held back by HTTP/2 flow control instead of filling our memory.
        """
        limit = self.settings.stream_max_in_flight
        slots = threading.Semaphore(limit)
        cancelled = threading.Event()
        out: queue.Queue = queue.Queue()
        request_id = current_request_id()
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="stream")

        def work(index: int, request) -> None:
            token = set_request_id(request_id)
            try:
                result = self.pipeline.analyze(request.image, request.options)
                out.put(image_input_pb2.AnalyzeImagesResponse(index=index, client_ref=request.client_ref,
                                                              result=result))
            except InputError as err:
                out.put(image_input_pb2.AnalyzeImagesResponse(
                    index=index, client_ref=request.client_ref,
                    error=image_input_pb2.ImageError(code=err.code.name, message=err.message)))
            except Exception as err:  # one bad image must not end the stream
                log.exception("stream item failed")
                out.put(image_input_pb2.AnalyzeImagesResponse(
                    index=index, client_ref=request.client_ref,
                    error=image_input_pb2.ImageError(code="INTERNAL", message=str(err))))
            finally:
                reset_request_id(token)

        def read() -> None:
            try:
                for index, request in enumerate(request_iterator):
                    slots.acquire()
                    if cancelled.is_set() or not context.is_active():
                        break
                    pool.submit(work, index, request)
            except grpc.RpcError:
                pass  # the client went away; in-flight items still finish
            finally:
                pool.shutdown(wait=True)
                out.put(_END)

        threading.Thread(target=read, name="stream-reader", daemon=True).start()
        try:
            while (item := out.get()) is not _END:
                yield item
                slots.release()
        finally:
            # The client may have gone: free the reader if it waits for a slot, so it can stop.
            cancelled.set()
            for _ in range(limit):
                slots.release()

    # --- stored results ---------------------------------------------------------------
    def _storage(self, context, call, request):
        try:
            return call(request, timeout=self.settings.rpc_timeout_seconds)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                context.abort(err.code(), err.details())
            failure = peer_error("data-storage", err)
            context.abort(failure.code, failure.message)

    def GetAnalysis(self, request, context):
        results.require_valid_id(request.analysis_id, context)
        found = self._storage(context, self.pipeline.storage.GetResult,
                              data_storage_pb2.GetResultRequest(analysis_id=request.analysis_id))
        return image_input_pb2.GetAnalysisResponse(result=found.result)

    def ListAnalyses(self, request, context):
        return self._storage(context, self.pipeline.storage.ListResults, request)

    def DeleteAnalysis(self, request, context):
        results.require_valid_id(request.analysis_id, context)
        return self._storage(context, self.pipeline.storage.DeleteResult, request)


def build(settings: config.Settings) -> ServiceApp:
    pipeline = Pipeline(settings)
    servicer = FaceAnalysisServicer(settings, pipeline)
    return ServiceApp(
        spec=services.IMAGE_INPUT,
        register=lambda server: image_input_pb2_grpc.add_FaceAnalysisServicer_to_server(servicer, server),
        # image-input has no models: it is ready once its server runs. Peers' readiness is
        # theirs to report; a call while they are down gets UNAVAILABLE.
        reflected=(services.IMAGE_INPUT.grpc_service,),
        # Room for a request a bit over the byte cap, so oversize uploads get our own message.
        max_message_bytes=settings.max_image_bytes * 2 + 1024 * 1024,
    )
