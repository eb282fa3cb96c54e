"""Configuration from environment variables (prefix FACEANALYSIS_).

One Settings class for all services: each service reads the fields it needs, and every
variable is documented here once. Defaults work for the local stack (`make run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from faceanalysis.runtime import services

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEANALYSIS_", extra="ignore")

    # --- serving ---------------------------------------------------------------------
    grpc_port: int | None = Field(None, ge=0, le=65535, description="gRPC port; default per service (50050-50053)")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus /metrics port; default per service (9150-9153)")
    bind_host: str = Field("[::]", description="address the gRPC server binds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_workers: int = Field(8, ge=1, description="gRPC handler threads")
    # Servers close connections after this age so clients re-resolve DNS and reach pods added by the HPA.
    max_connection_age_seconds: float = Field(120.0, gt=0)
    max_connection_age_grace_seconds: float = Field(30.0, ge=0)
    shutdown_grace_seconds: float = Field(25.0, ge=0, description="time in-flight calls get to finish after SIGTERM")

    # --- peers (image-input) ------------------------------------------------------------
    landmark_target: str = "dns:///localhost:50051"
    attributes_target: str = "dns:///localhost:50052"
    storage_target: str = "dns:///localhost:50053"
    rpc_timeout_seconds: float = Field(30.0, gt=0, description="deadline of each call to a peer")
    rpc_retries: int = Field(3, ge=0, le=4, description="retries on UNAVAILABLE (gRPC caps attempts at 5)")

    # --- input limits (image-input) ----------------------------------------------------------
    max_image_bytes: int = Field(20 * MiB, gt=0, description="larger uploads get RESOURCE_EXHAUSTED")
    max_image_pixels: int = Field(40_000_000, gt=0, description="larger images (decompression bombs) get RESOURCE_EXHAUSTED")
    min_image_side: int = Field(16, ge=1, description="smaller images get INVALID_ARGUMENT")
    stream_max_in_flight: int = Field(4, ge=1, description="images analysed at once per AnalyzeImages stream")

    # --- models ---------------------------------------------------------------------------
    models_dir: Path = Field(Path("models"), description="where `faceanalysis models pull` puts model files")
    model_mirror: str | None = Field(None, description="directory or URL to pull models from instead of the internet")

    # --- face-landmark ------------------------------------------------------------------------
    detector: Literal["yunet", "haar", "hog"] = "yunet"
    detection_threshold: float = Field(0.9, ge=0, le=1, description="YuNet score threshold")
    crop_size: int = Field(512, ge=64, le=2048, description="longest side of the aligned crop sent to face-attributes")

    # --- face-attributes ------------------------------------------------------------------------
    face_margin: float = Field(0.0, ge=0, le=1, description="context around each face box, as a fraction of its size")
    batch_max_size: int = Field(32, ge=1, description="faces per inference batch")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for concurrent calls")

    # --- data-storage ---------------------------------------------------------------------------
    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr | None = Field(None, description="overrides the URL's password; from a Kubernetes Secret")
    result_ttl_seconds: int = Field(7 * 24 * 3600, ge=1, description="how long Redis keeps a result")
    archive_dir: Path = Field(Path("storage/archive"), description="one JSON file per analysis")

    def grpc_port_for(self, spec: services.ServiceSpec) -> int:
        return spec.grpc_port if self.grpc_port is None else self.grpc_port

    def metrics_port_for(self, spec: services.ServiceSpec) -> int:
        return spec.metrics_port if self.metrics_port is None else self.metrics_port

    @property
    def raw_image_message_bytes(self) -> int:
        """The largest DetectFaces request: raw BGR pixels of the biggest accepted image."""
        return self.max_image_pixels * 3 + 1024 * 1024

    @property
    def deepface_home(self) -> Path:
        """DeepFace looks for weights in $DEEPFACE_HOME/.deepface/weights."""
        return self.models_dir.resolve()


def load() -> Settings:
    """Read settings, turning a bad variable into one clear line instead of a traceback."""
    try:
        return Settings()
    except ValidationError as err:
        lines = []
        for e in err.errors():
            name = "FACEANALYSIS_" + "_".join(str(p) for p in e["loc"]).upper()
            lines.append(f"{name}: {e['msg']} (got {e.get('input')!r})")
        raise SystemExit("invalid configuration:\n  " + "\n  ".join(lines)) from None
