"""Server interceptors built from one helper: wrap every RPC of a service in a context manager."""

from __future__ import annotations

import time
from contextlib import contextmanager

import grpc

from faceanalysis.runtime import logging as fa_logging, metrics

_INTERNAL = ("/grpc.health", "/grpc.reflection")


def wrap_handler(handler: grpc.RpcMethodHandler, around) -> grpc.RpcMethodHandler:
    """The same handler, each call running inside `around(context)` (unary and streaming replies)."""
    if handler.unary_unary:
        inner = handler.unary_unary

        def unary(request, context):
            with around(context):
                return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
    if handler.stream_stream:
        inner_stream = handler.stream_stream

        def stream(request_iterator, context):
            with around(context):
                yield from inner_stream(request_iterator, context)

        return grpc.stream_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                     handler.response_serializer)
    return handler


class RequestIdInterceptor(grpc.ServerInterceptor):
    """Takes the caller's x-request-id (or makes one) and binds it for logs and onward calls."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        incoming = dict(handler_call_details.invocation_metadata or ()).get(fa_logging.REQUEST_ID_HEADER)
        request_id = incoming or fa_logging.new_request_id()

        @contextmanager
        def bound(_context):
            token = fa_logging.set_request_id(request_id)
            try:
                yield
            finally:
                fa_logging.reset_request_id(token)

        return wrap_handler(handler, bound)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts (by status code), times and tracks in-flight calls of every RPC of a service."""

    def __init__(self, service: str):
        self.service = service

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_INTERNAL):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        labels = (self.service, method)

        @contextmanager
        def tracked(context):
            metrics.GRPC_IN_FLIGHT.labels(*labels).inc()
            start = time.perf_counter()
            try:
                yield
            except Exception:
                if context.code() is None:  # abort() already set a code; anything else is a bug
                    context.set_code(grpc.StatusCode.UNKNOWN)
                raise
            finally:
                metrics.GRPC_IN_FLIGHT.labels(*labels).dec()
                code = context.code()
                metrics.GRPC_REQUESTS.labels(*labels, code.name if isinstance(code, grpc.StatusCode) else "OK").inc()
                metrics.GRPC_LATENCY.labels(*labels).observe(time.perf_counter() - start)

        return wrap_handler(handler, tracked)
