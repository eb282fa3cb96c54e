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
    "gRPC calls being handled now, from the moment they arrive (queued ones included).",
    ["service", "method"],
)
# image-input's HTTP/JSON API. Each API call is also a gRPC call (the HTTP layer calls the gRPC API
# in-process), counted above by method and gRPC code; this adds what only HTTP sees: the route
# and the HTTP status, web files and refusals before any call (413, 415, 405, unknown paths).
HTTP_REQUESTS = Counter(
    "faceanalysis_http_requests_total",
    "HTTP requests answered, by service, route (path template; `unmatched` for unknown paths), method and status.",
    ["service", "route", "method", "code"],
)
# The autoscaling signal: work a pod has admitted and not finished (images in image-input and
# face-landmark, faces in face-attributes), queued work included. Idle streams count nothing.
WORK_IN_FLIGHT = Gauge(
    "faceanalysis_work_in_flight",
    "Work items admitted and not yet finished (images, or faces in face-attributes).",
    ["service"],
)
WORK_CAPACITY = Gauge(
    "faceanalysis_work_capacity",
    "Most work items a pod admits at once; beyond it calls get RESOURCE_EXHAUSTED.",
    ["service"],
)
WORK_QUEUED = Gauge(
    "faceanalysis_work_queued",
    "Calls waiting for a free admission slot (see FACEANALYSIS_ADMISSION_QUEUE).",
    ["service"],
)
ADMISSION_REJECTIONS = Counter(
    "faceanalysis_admission_rejections_total",
    "Work refused with RESOURCE_EXHAUSTED because the pod was at capacity and its queue full or too slow.",
    ["service"],
)
PEER_RETRIES = Counter(
    "faceanalysis_peer_retries_total",
    "Calls to a peer tried again after a retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED).",
    ["peer", "code"],
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
BATCH_QUEUE_FACES = Gauge(
    "faceanalysis_batch_queue_faces",
    "Faces waiting in face-attributes' batcher.",
)
BATCH_DROPPED_FACES = Counter(
    "faceanalysis_batch_dropped_faces_total",
    "Faces dropped before inference, by reason (expired: their deadline passed; cancelled: the caller left).",
    ["reason"],
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
