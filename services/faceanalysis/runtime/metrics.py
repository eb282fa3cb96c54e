"""Prometheus metrics. The names are a contract: dashboards, alerts and the HPA use them.

Every service registers all of them in the default registry, so each /metrics page lists
the full set (a metric a service never touches simply stays at zero).
"""

from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets from 1 ms to 30 s: inference sits in the low ms, whole analyses in the 100 ms range.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRPC_REQUESTS = Counter(
    "faceanalysis_grpc_requests_total",
    "gRPC calls handled, by service, method and status code.",
    ["service", "method", "code"],
)
GRPC_LATENCY = Histogram(
    "faceanalysis_grpc_request_duration_seconds",
    "Time to handle a gRPC call.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge(
    "faceanalysis_grpc_requests_in_flight",
    "gRPC calls being handled now.",
    ["service", "method"],
)
INFERENCE_LATENCY = Histogram(
    "faceanalysis_model_inference_duration_seconds",
    "Time of one model inference (one batch).",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "faceanalysis_model_batch_size",
    "Faces per inference batch.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MODEL_LOAD = Gauge(
    "faceanalysis_model_load_duration_seconds",
    "Time it took to load a model at start-up.",
    ["model"],
)
FACES_PER_IMAGE = Histogram(
    "faceanalysis_faces_per_image",
    "Faces found per analysed image.",
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50),
)
STORAGE_OPERATIONS = Counter(
    "faceanalysis_storage_operations_total",
    "data-storage operations, by operation and outcome (success, not_found, error).",
    ["operation", "outcome"],
)
CACHE_LOOKUPS = Counter(
    "faceanalysis_cache_lookups_total",
    "Result cache lookups by image-input, by result (hit, miss, error).",
    ["result"],
)
SERVING = Gauge(
    "faceanalysis_serving",
    "1 when the service's health is SERVING, else 0.",
    ["service"],
)


def start_metrics_server(port: int) -> None:
    """Serve /metrics on its own HTTP port (0 disables it)."""
    if port:
        start_http_server(port)


class observe_inference:
    """Context manager: records one batch's latency and size for `model`."""

    def __init__(self, model: str, batch: int):
        self.model, self.batch = model, batch

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        INFERENCE_LATENCY.labels(self.model).observe(time.perf_counter() - self.start)
        BATCH_SIZE.labels(self.model).observe(self.batch)
        return False


def _method_name(handler_call_details) -> str:
    return handler_call_details.method.rsplit("/", 1)[-1]


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and tracks in-flight calls for every RPC of a service."""

    def __init__(self, service: str):
        self.service = service

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        method = _method_name(handler_call_details)
        labels = (self.service, method)

        def record(start: float, context) -> None:
            code = context.code() if hasattr(context, "code") else None
            name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            GRPC_REQUESTS.labels(self.service, method, name).inc()
            GRPC_LATENCY.labels(*labels).observe(time.perf_counter() - start)

        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(request, context):
                GRPC_IN_FLIGHT.labels(*labels).inc()
                start = time.perf_counter()
                try:
                    return inner(request, context)
                except Exception:
                    if context.code() is None:
                        context.set_code(grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    GRPC_IN_FLIGHT.labels(*labels).dec()
                    record(start, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_stream = handler.stream_stream

            def stream(request_iterator, context):
                GRPC_IN_FLIGHT.labels(*labels).inc()
                start = time.perf_counter()
                try:
                    yield from inner_stream(request_iterator, context)
                except Exception:
                    if context.code() is None:
                        context.set_code(grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    GRPC_IN_FLIGHT.labels(*labels).dec()
                    record(start, context)

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
