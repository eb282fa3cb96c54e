"""image-input gRPC service: the public faceanalysis.v1.FaceAnalysis API (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from faceanalysis.image_input.http.listener import HttpListener
from faceanalysis.image_input.pipeline import Pipeline
from faceanalysis.runtime import auth, config, imagecodec, results, services, tenants, work
from faceanalysis.runtime.options import Options
from faceanalysis.runtime.channels import PeerError
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.runtime.server import ServiceApp
from faceanalysis.runtime.work import OVERLOADED, Admission, Overloaded, abort_overloaded
from faceanalysis.v1 import data_storage_pb2, image_input_pb2, image_input_pb2_grpc

log = logging.getLogger(__name__)
_END = object()
SHUTTING_DOWN = ("image-input is shutting down; reconnect and send again the images that got no answer")


class FaceAnalysisServicer(image_input_pb2_grpc.FaceAnalysisServicer):
    """Each call works for the caller's tenant: `tenants.current()`, bound by the API key
    interceptor (`default` when keys are off), read once per call and passed on explicitly."""

    def __init__(self, settings: config.Settings, pipeline: Pipeline):
        self.settings, self.pipeline = settings, pipeline
        self.admission = Admission(services.IMAGE_INPUT.name, settings.max_concurrent_images,
                                   queue=settings.admission_queue, wait_seconds=settings.admission_wait_seconds)
        self.draining = asyncio.Event()

    async def drain(self) -> None:
        self.draining.set()

    async def _analyze(self, request, deadline: float | None, tenant: str):
        """One admitted image. Raises Overloaded, imagecodec.InputError (options.InvalidOption for a
        bad option, before anything is admitted, called or stored) or PeerError."""
        options = Options.parse(request.options)
        async with self.admission.admitted(deadline=deadline):
            return await self.pipeline.analyze(request.image, options, deadline, tenant=tenant)

    async def AnalyzeImage(self, request, context):
        tenant = tenants.current()
        try:
            result = await self._analyze(request, work.deadline(context), tenant)
        except Overloaded as err:
            await abort_overloaded(context, err)
        except imagecodec.InputError as err:
            log_fields(log, logging.INFO, "refused", code=err.code.name, reason=err.message, bytes=len(request.image))
            await context.abort(err.code, err.message)
        except PeerError as err:
            await context.abort(err.code, err.message, trailing_metadata=OVERLOADED if err.overloaded else ())
        log_fields(log, logging.INFO, "analyzed", tenant=tenant, analysis_id=result.analysis_id,
                   faces=len(result.faces), stored=result.stored, cached=result.cached, bytes=len(request.image))
        return image_input_pb2.AnalyzeImageResponse(result=result)

    async def _item(self, index: int, request, deadline: float | None,
                    tenant: str) -> image_input_pb2.AnalyzeImagesResponse:
        """The answer to one image of a stream: its result, or its error (the stream goes on)."""
        reply = image_input_pb2.AnalyzeImagesResponse(index=index, client_ref=request.client_ref)
        try:
            reply.result.CopyFrom(await self._analyze(request, deadline, tenant))
        except Overloaded as err:
            reply.error.code, reply.error.message, reply.error.retryable = "RESOURCE_EXHAUSTED", str(err), True
        except PeerError as err:
            reply.error.code, reply.error.message = err.code.name, err.message
            reply.error.retryable = err.overloaded or err.code == grpc.StatusCode.UNAVAILABLE
        except imagecodec.InputError as err:
            reply.error.code, reply.error.message = err.code.name, err.message
        except Exception as err:  # one bad image must not end the stream
            log.exception("stream item failed")
            reply.error.code, reply.error.message = "INTERNAL", f"analysis failed: {err}"
        return reply

    async def AnalyzeImages(self, request_iterator, context):
        """At most `stream_max_in_flight` images of a stream are read and analysed at once.

        A slot is taken before the next request is read and given back only once its answer
        went out, so a client that sends faster than we analyse (or reads slower) is held back
        by HTTP/2 flow control instead of filling our memory. Every item shares the stream's
        deadline. When the client goes away, the stream's tasks are cancelled, which cancels
        their calls to peers, so no work is done or stored for answers nobody will read. On
        SIGTERM the stream stops reading, answers what it holds, then ends with UNAVAILABLE so
        the client resumes elsewhere.
        """
        deadline, tenant = work.deadline(context), tenants.current()
        slots = asyncio.Semaphore(self.settings.stream_max_in_flight)
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        stopped_by_drain = False

        async def next_request():
            """The next request, or None at the end of the stream or when draining."""
            get = asyncio.ensure_future(anext(request_iterator, None))
            drain = asyncio.ensure_future(self.draining.wait())
            try:
                await asyncio.wait((get, drain), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                get.cancel()  # the stream is over: stop reading it
                raise
            finally:
                drain.cancel()
            if self.draining.is_set():
                # A request read just now goes unanswered; the client sends it again elsewhere.
                get.cancel()
                return None
            return get.result()

        async def read() -> None:
            nonlocal stopped_by_drain
            index = 0
            try:
                while True:
                    await slots.acquire()
                    request = await next_request()
                    if request is None:
                        stopped_by_drain = self.draining.is_set()
                        break
                    task = asyncio.create_task(self._item(index, request, deadline, tenant))
                    task.add_done_callback(lambda t: answers.put_nowait(t.result()) if not t.cancelled() else None)
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    index += 1
                if tasks:
                    await asyncio.wait(set(tasks))
            finally:
                answers.put_nowait(_END)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not _END:
                yield answer
                slots.release()
            reader.result()  # a failed read (e.g. a malformed request) ends the stream with its status
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
        if stopped_by_drain:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    # --- stored results: the caller's tenant's only ------------------------------------
    async def _storage(self, context, method: str, request):
        try:
            return await self.pipeline.storage.call(method, request)
        except PeerError as err:
            if err.peer_code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                await context.abort(err.peer_code, err.details)
            await context.abort(err.code, err.message)

    async def GetAnalysis(self, request, context):
        await results.require_valid_id(request.analysis_id, context)
        found = await self._storage(context, "GetResult", data_storage_pb2.GetResultRequest(
            analysis_id=request.analysis_id, tenant=tenants.current()))
        return image_input_pb2.GetAnalysisResponse(result=found.result)

    async def ListAnalyses(self, request, context):
        return await self._storage(context, "ListResults", data_storage_pb2.ListResultsRequest(
            page_size=request.page_size, page_token=request.page_token, tenant=tenants.current()))

    async def DeleteAnalysis(self, request, context):
        await results.require_valid_id(request.analysis_id, context)
        return await self._storage(context, "DeleteResult", data_storage_pb2.DeleteResultRequest(
            analysis_id=request.analysis_id, tenant=tenants.current()))


def build(settings: config.Settings) -> ServiceApp:
    interceptors = auth.interceptors(settings.api_keys_file)  # first: a bad key file stops the start here
    pipeline = Pipeline(settings)
    servicer = FaceAnalysisServicer(settings, pipeline)
    return ServiceApp(
        spec=services.IMAGE_INPUT,
        register=lambda server: image_input_pb2_grpc.add_FaceAnalysisServicer_to_server(servicer, server),
        # image-input has no models: it is ready once its server runs. Peers' readiness is
        # theirs to report; a call while they are down is retried, then gets UNAVAILABLE.
        drain=servicer.drain,
        reflected=(services.IMAGE_INPUT.grpc_service,),
        max_message_bytes=settings.image_message_bytes,
        interceptors=interceptors,
        # The HTTP/JSON API and web page, on the same loop, calling this gRPC API in-process (http/).
        companions=(HttpListener(settings),) if settings.http_port else (),
    )
