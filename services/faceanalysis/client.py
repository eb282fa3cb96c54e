"""A small Python client of the public API (image-input), synchronous:

    from faceanalysis.client import Client

    with Client("faces.example.com:443", tls=True, api_key=key) as client:
        analysis = client.analyze("photo.jpg", actions=["age", "emotion"])  # a path, bytes or a numpy array
        for face in analysis.faces:
            print(face.box, face.age.years, face.emotion.dominant)
        for path, outcome in client.analyze_many(paths, concurrency=8):  # in completion order
            ...

Results are typed (faceanalysis.client_types: Analysis, Face, Box, Age, Gender, Emotion), with
the proto AnalysisResult kept as `analysis.proto`. `actions` takes DeepFace's names.

`Connection` is how the CLI and this client reach a server: plaintext or TLS (system roots, a CA
file, or --insecure), an authority, and an API key sent as `authorization: Bearer <key>` on
every call. The key is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceanalysis.client_types import Age, Analysis, Box, Emotion, Face, Gender, ImageInfo, Model, Summary
from faceanalysis.runtime import channels, tls as fa_tls
from faceanalysis.runtime.batch import AnalysisError, Batch
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc

__all__ = ["Age", "Analysis", "AnalysisError", "Box", "Client", "Connection", "Emotion", "Face", "Gender",
           "ImageInfo", "Model", "Summary", "analysis_options", "parse_actions"]

# Room for a 20 MiB upload (image-input's default cap) and the result of a crowded photo.
MAX_MESSAGE_BYTES = channels.PEER_MESSAGE_BYTES

# The proto's Action values by their short names (ACTION_AGE -> "age"): DeepFace's action names
# (DeepFace.analyze(actions=...)) plus landmarks, as the HTTP API's query string spells them too.
ACTIONS = {name.removeprefix("ACTION_").lower(): value for name, value in common_pb2.Action.items() if value}

# What analyze() takes: a path, the encoded file's bytes, or a decoded picture (numpy, BGR as OpenCV has it).
Image = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]
T = TypeVar("T")


def parse_actions(actions: str | Iterable[str] | None) -> list[int]:
    """DeepFace-style names ("age", "gender", "emotion", "landmarks"; one string or several) as
    Action values, in the order given, without repeats. None: all four (the server's default)."""
    if actions is None:
        return []
    names = [actions] if isinstance(actions, str) else list(actions)
    unknown = [n for n in names if not isinstance(n, str) or n.strip().lower() not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown action {unknown[0]!r}: choose from {', '.join(ACTIONS)}")
    if not names:
        raise ValueError(f"actions is empty: name at least one of {', '.join(ACTIONS)} (or none at all for all four)")
    return list(dict.fromkeys(ACTIONS[n.strip().lower()] for n in names))


def analysis_options(*, actions: str | Iterable[str] | None = None, detection_threshold: float | None = None,
                     min_face: int | None = None, no_store: bool = False,
                     skip_cache: bool = False) -> common_pb2.AnalysisOptions:
    """AnalysisOptions from keyword values, checked here so that a bad value is a ValueError
    naming it before anything is sent. None leaves a setting to the server."""
    options = common_pb2.AnalysisOptions(actions=parse_actions(actions), no_store=no_store, skip_cache=skip_cache)
    if detection_threshold is not None:
        if isinstance(detection_threshold, bool) or not 0 < float(detection_threshold) < 1:
            raise ValueError(f"detection_threshold must be between 0 and 1 (both excluded), "
                             f"got {detection_threshold!r}")
        options.detection_threshold = float(detection_threshold)
    if min_face is not None:
        if isinstance(min_face, bool) or int(min_face) != min_face or min_face < 1:
            raise ValueError(f"min_face must be a whole number of pixels, at least 1, got {min_face!r}")
        options.min_face = int(min_face)
    return options


def png_of(array: np.ndarray) -> bytes:
    """A decoded picture as lossless PNG: HxWx3 uint8 in BGR order (OpenCV's, DeepFace's), HxWx4
    BGRA, or HxW (HxWx1) grey. Needs Pillow (`pip install 'faceanalysis[client]'`)."""
    try:
        from PIL import Image as PILImage
    except ImportError as err:
        raise ImportError("sending a numpy array needs Pillow: pip install 'faceanalysis[client]'") from err
    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # BGR -> RGB
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    elif array.ndim != 2:
        raise ValueError(f"an image array must be HxW (grey), HxWx3 (BGR) or HxWx4 (BGRA), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"an image array must not be empty, got shape {array.shape}")
    buffer = io.BytesIO()
    # Compression level 1: a few times faster than the default on camera frames, and still lossless.
    PILImage.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_bytes(image: Image) -> bytes:
    """What is sent for an image: a file's bytes as they are, an array as PNG. Raises OSError for a
    file that cannot be read, ValueError for an array that is no picture, TypeError for anything else,
    and AnalysisError (RESOURCE_EXHAUSTED) for more than one message can carry."""
    if isinstance(image, np.ndarray):
        data = png_of(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        size = path.stat().st_size
        if size > MAX_MESSAGE_BYTES:  # refuse before reading it whole
            raise AnalysisError("RESOURCE_EXHAUSTED", f"{path} is {size} bytes; at most {MAX_MESSAGE_BYTES} "
                                                      "bytes can be sent")
        data = path.read_bytes()
    else:
        raise TypeError(f"an image is a path, bytes or a numpy array, not {type(image).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise AnalysisError("RESOURCE_EXHAUSTED", f"the image is {len(data)} bytes; at most {MAX_MESSAGE_BYTES} "
                                                  "bytes can be sent")
    return data


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


def dial(target: str | Connection) -> grpc.Channel:
    """A channel with the services' own options (fast reconnect, keepalive, our retries only),
    whose keepalive also runs on an idle stream, so a server that vanished is noticed. A
    Connection adds TLS, an authority and the API key."""
    connection = target if isinstance(target, Connection) else Connection(target)
    return connection.channel([
        *channels.channel_options(MAX_MESSAGE_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ])


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
        self._channel = dial(self.connection)
        self._stub = image_input_pb2_grpc.FaceAnalysisStub(self._channel)

    def analyze(self, image: Image, *, actions: str | Iterable[str] | None = None,
                detection_threshold: float | None = None, min_face: int | None = None, no_store: bool = False,
                skip_cache: bool = False, timeout: float | None = None) -> Analysis:
        """Faces of one image: a path, the encoded file's bytes, or a decoded picture as a numpy array
        (HxWx3 uint8 BGR as cv2.imread gives, HxWx4 BGRA, HxW grey; sent as lossless PNG).

        `actions`: any of "age", "gender", "emotion", "landmarks" (None: all); what is not asked for
        is None on each face (landmarks: empty) and is not computed. `detection_threshold` in (0, 1)
        and `min_face` (pixels, the shorter box side) override the server's defaults. A bad option or
        image raises ValueError (TypeError for what is no image) before anything is sent.
        """
        request = image_input_pb2.AnalyzeImageRequest(
            image=image_bytes(image),
            options=analysis_options(actions=actions, detection_threshold=detection_threshold, min_face=min_face,
                                     no_store=no_store, skip_cache=skip_cache))
        return Analysis.from_proto(self._call(self._stub.AnalyzeImage, request, timeout).result)

    def analyze_many(self, images: Iterable[T], *, concurrency: int = 8, actions: str | Iterable[str] | None = None,
                     detection_threshold: float | None = None, min_face: int | None = None,
                     no_store: bool = False, skip_cache: bool = False,
                     timeout: float | None = None) -> Iterator[tuple[T, Analysis | AnalysisError]]:
        """Analyze many images over one AnalyzeImages stream; yields `(image, outcome)` for each, where
        `image` is the very object passed in and `outcome` an Analysis or, for an image that failed,
        an AnalysisError (the others go on). Outcomes come in COMPLETION order, not input order.

        `images` is read lazily: at most `concurrency` images are held (sent, waiting for a retry,
        or answered but not yet taken), so a generator of video frames is fine. Images the server
        answers as busy (RESOURCE_EXHAUSTED, a peer restarting) are sent again after a short backoff,
        with fewer in flight; a stream that breaks is reopened and only unanswered images are sent
        again. Raises AnalysisError when the stream fails for good (UNAUTHENTICATED, ...) or when no
        image was answered for `timeout` seconds (default: the client's timeout). Options as analyze()
        (a bad one raises ValueError at once); stopping the iteration early cancels what is in flight.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        options = analysis_options(actions=actions, detection_threshold=detection_threshold, min_face=min_face,
                                   no_store=no_store, skip_cache=skip_cache)

        def request_for(image: T) -> image_input_pb2.AnalyzeImageRequest:
            try:
                data = image_bytes(image)  # type: ignore[arg-type]
            except TypeError as err:  # one unusable item fails alone
                raise AnalysisError("INVALID_ARGUMENT", str(err)) from None
            return image_input_pb2.AnalyzeImageRequest(image=data, options=options)

        batch = Batch(self._stub, images, request_for, streams=1, window=concurrency,
                      retry_seconds=self.timeout if timeout is None else timeout)
        return _typed(batch)

    def get(self, analysis_id: str, *, timeout: float | None = None) -> Analysis:
        """A stored analysis by id (NOT_FOUND when it was deleted, expired or never stored)."""
        response = self._call(self._stub.GetAnalysis, image_input_pb2.GetAnalysisRequest(analysis_id=analysis_id),
                              timeout)
        return Analysis.from_proto(response.result)

    def list(self, *, page_size: int = 0, timeout: float | None = None) -> Iterator[Summary]:
        """Every stored analysis, newest first, fetched a page at a time as the iteration goes."""
        token = ""
        while True:
            response = self._call(self._stub.ListAnalyses,
                                  image_input_pb2.ListAnalysesRequest(page_size=page_size, page_token=token), timeout)
            yield from (Summary.from_proto(s) for s in response.analyses)
            token = response.next_page_token
            if not token:
                return

    def delete(self, analysis_id: str, *, timeout: float | None = None) -> bool:
        """Forget an analysis; True when something was held."""
        request = image_input_pb2.DeleteAnalysisRequest(analysis_id=analysis_id)
        return self._call(self._stub.DeleteAnalysis, request, timeout).deleted

    def _call(self, method, request, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
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


def _typed(batch: Batch) -> Iterator[tuple[Any, Analysis | AnalysisError]]:
    for item, outcome in batch:
        yield item, outcome if isinstance(outcome, AnalysisError) else Analysis.from_proto(outcome)
