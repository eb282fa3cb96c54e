"""Prometheus metrics. The names are a contract: dashboards, alerts and the HPA use them.

Every service registers all of them in the default registry, so each /metrics page lists
the full set (a metric a service never touches simply stays at zero).
"""

from __future__ import annotations

import time

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
