"""Server interceptors (grpc.aio), built from one helper that wraps every call of a service.

- RequestIdInterceptor binds the caller's x-request-id (or a new one) for logs and onward calls.
- MetricsInterceptor counts calls by status code, times them and tracks them in flight from the
  moment they arrive, so queued calls count too.
- Both turn a request that is not a valid protobuf message into INVALID_ARGUMENT (gRPC's own
  deserializer answers INTERNAL, which blames the server for the client's bytes).
Health and reflection (/grpc.*) pass through untouched: probes must stay cheap.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import grpc
from google.protobuf.message import DecodeError

from faceanalysis.runtime import logging as fa_logging, metrics

_INTERNAL = "/grpc."


class _Malformed:
    """Stands in for a request whose bytes did not parse; the handler wrapper refuses it."""

    def __init__(self, error: Exception):
        self.error = error


def _tolerant(deserializer):
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as err:
            return _Malformed(err)

    return parse


async def _refuse_malformed(request, context) -> None:
    if isinstance(request, _Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"request is not a valid protobuf message for this method: {request.error}")


def wrap_handler(handler: grpc.RpcMethodHandler, around) -> grpc.RpcMethodHandler:
    """The same handler, each call running inside `around(context)` (an async context manager).

    Only unary-unary and stream-stream handlers exist in our APIs; others pass through.
    """
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request, context):
            async with around(context):
                await _refuse_malformed(request, context)
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, _tolerant(handler.request_deserializer),
                                                   handler.response_serializer)
    if handler.stream_stream:
        inner_stream = handler.stream_stream

        async def stream(request_iterator, context):
            async def checked():
                async for request in request_iterator:
                    await _refuse_malformed(request, context)
                    yield request

            async with around(context):
                async for response in inner_stream(checked(), context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream, _tolerant(handler.request_deserializer),
                                                     handler.response_serializer)
    return handler


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Takes the caller's x-request-id (or makes one) and binds it for logs and onward calls."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_INTERNAL):
            return handler
        incoming = dict(handler_call_details.invocation_metadata or ()).get(fa_logging.REQUEST_ID_HEADER)
        request_id = fa_logging.accept_request_id(incoming)

        @asynccontextmanager
        async def bound(_context):
            token = fa_logging.set_request_id(request_id)
            try:
                yield
            finally:
                fa_logging.reset_request_id(token)

        return wrap_handler(handler, bound)


def _status_name(context, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"  # the client went away (or its deadline passed) mid-call
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if error is not None else "OK"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts (by status code), times and tracks in-flight calls of every RPC of a service."""

    def __init__(self, service: str):
        self.service = service

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_INTERNAL):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        labels = (self.service, method)

        @asynccontextmanager
        async def tracked(context):
            metrics.GRPC_IN_FLIGHT.labels(*labels).inc()
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as err:  # noqa: BLE001 - recorded, then re-raised
                error = err
                raise
            finally:
                metrics.GRPC_IN_FLIGHT.labels(*labels).dec()
                metrics.GRPC_REQUESTS.labels(*labels, _status_name(context, error)).inc()
                metrics.GRPC_LATENCY.labels(*labels).observe(time.perf_counter() - start)

        return wrap_handler(handler, tracked)
