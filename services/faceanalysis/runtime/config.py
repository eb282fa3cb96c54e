"""Configuration from environment variables (prefix FACEANALYSIS_).

One Settings class for all services: each service reads the fields it needs, and every
variable is documented here once. Defaults work for the local stack (`make run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from faceanalysis.runtime import services

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEANALYSIS_", extra="ignore")

    # --- serving ---------------------------------------------------------------------
    grpc_port: int | None = Field(None, ge=0, le=65535, description="gRPC port; default per service (50050-50053)")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus /metrics port; default per service (9150-9153)")
    bind_host: str = Field("[::]", description="address the gRPC server binds")
    http_port: int = Field(
        services.IMAGE_INPUT.http_port, ge=0, le=65535, description="(image-input) port of the HTTP/JSON API and web page (HTTPS when TLS "
        "is set); 0: off")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Servers run on asyncio: an open call costs no thread. Blocking work (decoding, inference,
    # Redis) runs in a pool of this many threads; calls beyond the pool wait in line (admitted).
    max_workers: int = Field(4, ge=1, description="threads for blocking work (decode, inference, Redis)")
    max_concurrent_images: int = Field(
        8, ge=1, description="images a pod works on at once (image-input: in the pipeline; face-landmark: "
        "decoding and detecting); beyond it calls get RESOURCE_EXHAUSTED at once. The chart derives it "
        "from the memory limit")
    # A short line in front of that cap (runtime/work.py says why): at most this many calls wait for
    # a free slot, first come first served, each for at most admission_wait_seconds and never past
    # its deadline. A waiting call holds only its request (the upload, read before it could be
    # refused anyway). 0: refuse at once, as before.
    admission_queue: int = Field(
        8, ge=0, description="calls that may wait for a free slot beyond max_concurrent_images "
        "(image-input and face-landmark); beyond it, RESOURCE_EXHAUSTED at once")
    admission_wait_seconds: float = Field(
        5.0, ge=0, description="longest wait in that line before RESOURCE_EXHAUSTED")
    cpu_limit: float | None = Field(
        None, gt=0, description="CPUs this container may use (Kubernetes downward API, limits.cpu); "
        "default: the cgroup quota, else the CPUs the process may run on")
    # Servers close connections after this age so clients re-resolve DNS and reach pods added by the HPA.
    max_connection_age_seconds: float = Field(120.0, gt=0)
    # ... and give calls on an aged connection this long to finish: long enough for a stream's
    # in-flight work. A client that streams for longer resumes on a new connection.
    max_connection_age_grace_seconds: float = Field(300.0, ge=0)
    # Server keepalive: a client that vanished without closing its connection is noticed within
    # keepalive_seconds + keepalive_timeout_seconds, and its calls are cancelled.
    keepalive_seconds: float = Field(30.0, gt=0, description="ping an idle connection this often")
    keepalive_timeout_seconds: float = Field(10.0, gt=0, description="close a connection whose ping is not answered")
    shutdown_grace_seconds: float = Field(25.0, ge=0, description="time in-flight calls get to finish after SIGTERM")

    # --- TLS (every service; files checked at start by runtime/tls.py) ---------------------------
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain); with tls_key_file the gRPC port serves TLS only, and the "
        "pair is also the client certificate presented to peers when peer_ca_file is set")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file (unencrypted)")
    tls_client_ca_file: Path | None = Field(
        None, description="mTLS: clients must present a certificate signed by a CA in this PEM file, "
        "otherwise the handshake is refused")
    peer_ca_file: Path | None = Field(
        None, description="(image-input) dial peers over TLS, verifying them against the CAs in this PEM file")
    # The kubelet's gRPC probe cannot speak TLS, so with TLS on the probes need a port without it.
    # It serves grpc.health.v1 and nothing else: it tells nothing but SERVING or NOT_SERVING.
    health_port: int | None = Field(
        None, ge=0, le=65535, description="plaintext port serving only grpc.health.v1 (for probes when TLS is on)")

    # --- peers (image-input) ------------------------------------------------------------
    landmark_target: str = "dns:///localhost:50051"
    attributes_target: str = "dns:///localhost:50052"
    storage_target: str = "dns:///localhost:50053"
    rpc_timeout_seconds: float = Field(30.0, gt=0, description="deadline of each call to a peer")
    # Application-level retries (gRPC's own stop at 256 KiB requests): a call that gets
    # UNAVAILABLE is tried again with backoff for this long, within the caller's deadline, so
    # a peer restart of a few seconds fails nothing.
    peer_retry_seconds: float = Field(10.0, ge=0, description="how long calls to a peer are retried on UNAVAILABLE")
    # The result cache key holds the digest of the peers' models and settings (image_input/fingerprint.py).
    cache_models_refresh_seconds: float = Field(
        30.0, ge=0, description="how often image-input asks its peers which models they serve, for the cache "
        "key: after new weights or settings, old cached answers are served for at most this long")

    # --- input limits (image-input) ----------------------------------------------------------
    max_image_bytes: int = Field(20 * MiB, gt=0, description="larger uploads get RESOURCE_EXHAUSTED")
    # Counted at decoded cost: an image costs width x height x max(3, bytes per pixel of its
    # mode) / 3, so 16-bit RGB, RGBA and CMYK inputs count at what decoding them takes.
    max_image_pixels: int = Field(40_000_000, gt=0, description="larger images (decompression bombs) get RESOURCE_EXHAUSTED")
    min_image_side: int = Field(16, ge=1, description="smaller images get INVALID_ARGUMENT")
    stream_max_in_flight: int = Field(4, ge=1, description="images analysed at once per AnalyzeImages stream")

    # --- API keys (image-input) -----------------------------------------------------------------
    api_keys_file: Path | None = Field(
        None, description="hashed API keys, one `<sha256 hex> <tenant> [<scopes>]` a line (see runtime/auth.py); "
        "unset or empty: API keys off, every caller is tenant `default`")

    @field_validator("api_keys_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file", "peer_ca_file",
                     "health_port", mode="before")
    @classmethod
    def _empty_means_off(cls, value):
        # A chart or compose file that sets the variable to "" means "off", not "the current directory".
        return None if value == "" else value

    # --- models ---------------------------------------------------------------------------
    models_dir: Path = Field(Path("models"), description="where `faceanalysis models pull` puts model files")
    model_mirror: str | None = Field(None, description="directory or URL to pull models from instead of the internet")
    allow_unverified_models: bool = Field(
        False, description="`models pull` installs files no known sha256 verifies (manifest, mirror); "
        "default: refuse them")

    # --- face-landmark ------------------------------------------------------------------------
    detector: Literal["yunet", "haar", "hog"] = "yunet"
    detection_threshold: float = Field(0.9, ge=0, le=1, description="YuNet score threshold")
    # The crop holds twice the face box, so 448 puts the face at 224 px, the attribute models'
    # input size: face-attributes only ever shrinks it.
    crop_size: int = Field(448, ge=64, le=2048, description="longest side of the aligned crop sent to face-attributes; "
                           "image-input asks for smaller ones where the attribute models need less")
    # YuNet is most of face-landmark's CPU time and grows with the pixels it is given, so it
    # searches a downscaled copy (boxes and landmarks stay in the original's pixels; landmarks and
    # crops use the full image). 640 px is the size DeepFace's own YuNet wrapper uses. On the 32
    # shared photos it found the same faces, photo by photo, as 1280 px and full resolution, at
    # 3.3x less detection CPU than 1280 px (24 vs 78 ms per photo, one thread); dlib's landmarks
    # moved by a median 0.010 and a 90th percentile 0.017 of the eye distance from full resolution
    # (1280 px: 0.000 and 0.017), the most on a profile face in t1.jpg (0.16 of its narrow eye
    # distance: 2 px on a 99 px face). Photos larger than 640 / (14 / detection_min_face) px are
    # searched at the scale detection_min_face needs instead (2194 px for 48).
    detection_max_side: int = Field(
        640, ge=320, le=65536, description="YuNet's first pass sees the image with its longest side "
        "shrunk to this many pixels (never enlarged) unless detection_min_face needs more; faces too "
        "large for YuNet there are found in a pyramid of coarser copies, and faces too small for it to "
        "be sure of are looked at again at full resolution")
    # YuNet, with its re-check, finds a face 14 px wide at the scale it searches, so the first pass
    # uses at least 14/detection_min_face of the original's pixels per side. 48 searches 12 MP
    # (4000x3000) photos at 1167 px and 24 MP ones at 1750 px (40 would need 1400 px, in tiles,
    # for every 12 MP photo).
    detection_min_face: int = Field(
        48, ge=1, le=4096, description="width in original-image pixels of the smallest face that must be "
        "found in any image: where detection_max_side would leave such a face under 14 px for YuNet, the "
        "first pass uses more pixels (in 1280 px tiles; below 14, full resolution). Smaller faces are "
        "still found when they are big enough at the scale used")

    # --- face-attributes ------------------------------------------------------------------------
    # Each attribute model's margin is what its weights want (the manifest and the models
    # directory's models.lock.json say: DeepFace's official weights 0, the mirror's stand-ins 0.4).
    face_margin: float | None = Field(
        None, ge=0, le=1, description="override of every attribute model's own face margin (context around "
        "each face box, as a fraction of its size); logged as a WARNING where it differs. Unset: each "
        "model's own, from its metadata")

    @field_validator("face_margin", mode="before")
    @classmethod
    def _empty_margin_means_unset(cls, value):
        return None if value == "" else value
    # Measured with VGG-16-cost age and gender models on 2 cores: per-face time falls from batch 1
    # to 4 (1.2x) and is flat beyond, while the activations grow with the batch (peak RSS 1.38 GB
    # at 4, 1.53 at 8, 2.1 at 32). So 4: the speed of batching without its memory.
    batch_max_size: int = Field(4, ge=1, description="faces per inference batch")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for concurrent calls")
    batch_queue_max_faces: int = Field(
        256, ge=1, description="faces waiting for inference; beyond it calls get RESOURCE_EXHAUSTED at once")
    int8_models: str = Field(
        "", description="comma-separated subset of age, gender, emotion served from the int8 copies that "
        "`faceanalysis models quantize` writes (<model>.int8.onnx beside the fp32 file); empty: all fp32")

    @field_validator("int8_models")
    @classmethod
    def _known_attribute_models(cls, value: str) -> str:
        from faceanalysis.models.quantize import check_names  # the one list of attribute models

        return ",".join(check_names(value)) if value.replace(",", "").strip() else ""

    # --- data-storage ---------------------------------------------------------------------------
    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr | None = Field(None, description="overrides the URL's password; from a Kubernetes Secret")
    result_ttl_seconds: int = Field(7 * 24 * 3600, ge=1, description="how long Redis keeps a result")
    archive_dir: Path = Field(Path("storage/archive"), description="one JSON file per analysis")
    archive_retention_days: float = Field(
        0, ge=0, description="archived results older than this are deleted (checked at start and hourly, by "
        "every data-storage replica); 0 keeps them until DeleteAnalysis")

    def grpc_port_for(self, spec: services.ServiceSpec) -> int:
        return spec.grpc_port if self.grpc_port is None else self.grpc_port

    def metrics_port_for(self, spec: services.ServiceSpec) -> int:
        return spec.metrics_port if self.metrics_port is None else self.metrics_port

    @property
    def image_message_bytes(self) -> int:
        """The largest message carrying one upload: a bit over the byte cap, so an oversize
        upload reaches our own check and gets our own message instead of gRPC's."""
        return self.max_image_bytes * 2 + 1024 * 1024

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
