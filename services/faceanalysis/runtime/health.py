"""grpc.health.v1 wiring: NOT_SERVING until the service is ready, and again once draining."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from faceanalysis.runtime import metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Health of one service, reported under "" (the whole server) and its own name."""

    def __init__(self, service_label: str, grpc_service: str):
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self.label = service_label
        self.names = ("", grpc_service)
        self.set(False)

    def register(self, server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def set(self, serving: bool) -> None:
        for name in self.names:
            self.servicer.set(name, SERVING if serving else NOT_SERVING)
        metrics.SERVING.labels(self.label).set(1 if serving else 0)

    def drain(self) -> None:
        """NOT_SERVING from now on, whatever happens later (graceful shutdown)."""
        self.servicer.enter_graceful_shutdown()
        metrics.SERVING.labels(self.label).set(0)
