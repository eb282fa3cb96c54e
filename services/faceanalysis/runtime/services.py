"""The four services: names, default ports and gRPC service names, in one place.

Charts, compose, the local stack and tests read these instead of keeping their own lists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # image, chart and Kubernetes Service name
    grpc_port: int
    metrics_port: int
    grpc_service: str  # fully qualified gRPC service name (health checks use it)
    module: str  # module with a `build(settings)` function returning a ServiceApp
    http_port: int | None = None  # the HTTP/JSON API and web page (image-input only)

    @property
    def ports(self) -> set[int]:
        """Every port the service listens on by default: what an image exposes."""
        return {self.grpc_port, self.metrics_port} | ({self.http_port} if self.http_port else set())


IMAGE_INPUT = ServiceSpec("image-input", 50050, 9150, "faceanalysis.v1.FaceAnalysis", "faceanalysis.image_input.server",
                          http_port=8080)
FACE_LANDMARK = ServiceSpec("face-landmark", 50051, 9151, "faceanalysis.v1.FaceLandmark", "faceanalysis.face_landmark.server")
FACE_ATTRIBUTES = ServiceSpec("face-attributes", 50052, 9152, "faceanalysis.v1.FaceAttributes", "faceanalysis.face_attributes.server")
DATA_STORAGE = ServiceSpec("data-storage", 50053, 9153, "faceanalysis.v1.DataStorage", "faceanalysis.data_storage.server")

SERVICES: dict[str, ServiceSpec] = {s.name: s for s in (IMAGE_INPUT, FACE_LANDMARK, FACE_ATTRIBUTES, DATA_STORAGE)}

# The order in which the local stack starts them: dependencies first.
START_ORDER = ("data-storage", "face-landmark", "face-attributes", "image-input")


def get(name: str) -> ServiceSpec:
    try:
        return SERVICES[name]
    except KeyError:
        raise SystemExit(f"unknown service {name!r}; choose one of: {', '.join(SERVICES)}") from None
