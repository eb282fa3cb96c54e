"""grpc.health.v1 wiring: NOT_SERVING until the service is ready, and again once draining.

The servicer is the asyncio one: it answers on the event loop, never behind model work in
the thread pool, so a pod busy with inference still passes its probes.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from faceanalysis.runtime import metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Health of one service, reported under "" (the whole server) and its own name."""

    def __init__(self, service_label: str, grpc_service: str):
        self.servicer = health.aio.HealthServicer()
        self.label = service_label
        self.names = ("", grpc_service)

    def register(self, server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set(self, serving: bool) -> None:
        for name in self.names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        metrics.SERVING.labels(self.label).set(1 if serving else 0)

    async def drain(self) -> None:
        """NOT_SERVING from now on, whatever happens later (graceful shutdown)."""
        await self.servicer.enter_graceful_shutdown()
        metrics.SERVING.labels(self.label).set(0)
