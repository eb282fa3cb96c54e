"""A small Python client of the public API (image-input), synchronous:

    from faceanalysis.client import Client

    with Client("faces.example.com:443", tls=True, api_key=key) as client:
        result = client.analyze("photo.jpg")   # faceanalysis.v1.AnalysisResult
        print(len(result.faces))

`Connection` is how the CLI and this client reach a server: plaintext or TLS (system roots, a CA
file, or --insecure), an authority, and an API key sent as `authorization: Bearer <key>` on
every call. The key is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceanalysis.runtime import channels, tls as fa_tls
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc

# Room for a 20 MiB upload (image-input's default cap) and the result of a crowded photo.
MAX_MESSAGE_BYTES = channels.PEER_MESSAGE_BYTES


class AnalysisError(Exception):
    """A call that failed: `code` is the gRPC status name (UNAUTHENTICATED, INVALID_ARGUMENT, ...),
    `message` what the server (or gRPC, for a connection that failed) said."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message

    @classmethod
    def of(cls, err: grpc.RpcError) -> "AnalysisError":
        return cls(err.code().name, err.details() or "")


class InsecureWarning(UserWarning):
    """TLS whose server certificate is not verified (insecure=True, --insecure)."""


def insecure_warning(target: str) -> str:
    return (f"not verifying the certificate of {target}: the connection is encrypted, but anyone on the way "
            "can pose as the server and read what is sent, the API key included")


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata to every call: an interceptor rather than call credentials, because
    call credentials need TLS and the local stack may check keys in plaintext."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]):
        self._pairs = pairs

    def _with(self, details):
        return _CallDetails(details.method, details.timeout, (*(details.metadata or ()), *self._pairs),
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


@dataclass(frozen=True)
class Connection:
    """Where the public API is and how to talk to it. `ca` or `insecure` imply TLS."""

    target: str
    tls: bool = False
    ca: str | Path | None = None
    insecure: bool = False
    authority: str | None = None
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.ca is not None and self.insecure:
            raise ValueError("ca and insecure exclude each other: verify against a CA, or do not verify")

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.insecure

    def channel(self, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        """A synchronous channel; raises tls.TlsError when the CA file or the server's certificate
        (insecure) cannot be had."""
        options = list(options if options is not None else channels.channel_options(MAX_MESSAGE_BYTES))
        if self.authority:
            # The :authority the edge routes by (a Gateway's hostname, an Ingress host).
            options.append(("grpc.default_authority", self.authority))
        if self.secure:
            if self.insecure:
                warnings.warn(InsecureWarning(insecure_warning(self.target)), stacklevel=2)
            credentials, tls_options = fa_tls.client_credentials(self.target, ca=self.ca, insecure=self.insecure,
                                                                 authority=self.authority)
            channel = grpc.secure_channel(self.target, credentials, options=options + tls_options)
        else:
            channel = grpc.insecure_channel(self.target, options=options)
        if self.api_key:
            channel = grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {self.api_key}"),)))
        return channel


def health_of(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN, ...; raises AnalysisError when the call fails."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout)
    except grpc.RpcError as err:
        raise AnalysisError.of(err) from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class Client:
    """A client of image-input's FaceAnalysis API. Calls raise AnalysisError; `timeout` is each
    call's deadline in seconds."""

    def __init__(self, target: str, *, tls: bool = False, ca: str | Path | None = None, insecure: bool = False,
                 authority: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.connection = Connection(target, tls=tls, ca=ca, insecure=insecure, authority=authority,
                                     api_key=api_key)
        self.timeout = timeout
        self._channel = self.connection.channel()
        self._stub = image_input_pb2_grpc.FaceAnalysisStub(self._channel)

    def analyze(self, image: str | Path | bytes, *, no_store: bool = False,
                skip_cache: bool = False) -> common_pb2.AnalysisResult:
        """Faces, landmarks, age, gender and emotion of one image (a path, or the encoded bytes)."""
        data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        request = image_input_pb2.AnalyzeImageRequest(
            image=bytes(data), options=common_pb2.AnalysisOptions(no_store=no_store, skip_cache=skip_cache))
        try:
            return self._stub.AnalyzeImage(request, timeout=self.timeout).result
        except grpc.RpcError as err:
            raise AnalysisError.of(err) from None

    def health(self, service: str = "") -> str:
        """The server's gRPC health: SERVING, NOT_SERVING, ... ("" is the whole server)."""
        return health_of(self._channel, service, self.timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
