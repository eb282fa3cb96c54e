"""One image through the pipeline: inspect → face-landmark → face-attributes → data-storage.

image-input never decodes pixels. It checks the header, the caps and the sha256, then forwards
the encoded bytes; face-landmark decodes them once. A 12 MP JPEG thus crosses the network as
its 3-5 MB, not as 34 MiB of BGR pixels.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace

import grpc
from google.protobuf import timestamp_pb2

from faceanalysis.image_input import fingerprint
from faceanalysis.image_input.fingerprint import Fingerprint
from faceanalysis.runtime import channels, config, imagecodec, metrics, timing
from faceanalysis.runtime.channels import Peer, PeerError
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.runtime.options import Options
from faceanalysis.runtime.tls import peer_credentials
from faceanalysis.runtime.work import run_blocking
from faceanalysis.v1 import (
    common_pb2,
    data_storage_pb2,
    data_storage_pb2_grpc,
    face_attributes_pb2,
    face_attributes_pb2_grpc,
    face_landmark_pb2_grpc,
)

log = logging.getLogger(__name__)
# A cache lookup is an optimisation: never let a slow one eat the analysis' time.
CACHE_LOOKUP_SECONDS = 2.0


class Pipeline:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.limits = imagecodec.Limits.from_settings(settings)
        peer = dict(timeout=settings.rpc_timeout_seconds, retry_seconds=settings.peer_retry_seconds)
        tls = dict(credentials=peer_credentials(settings))  # None: plaintext peers
        self.channels = [
            channels.dial(settings.landmark_target, max_message_bytes=settings.image_message_bytes, **tls),
            channels.dial(settings.attributes_target, max_message_bytes=channels.PEER_MESSAGE_BYTES, **tls),
            channels.dial(settings.storage_target, max_message_bytes=channels.PEER_MESSAGE_BYTES, **tls),
        ]
        self.landmark = Peer("face-landmark", face_landmark_pb2_grpc.FaceLandmarkStub(self.channels[0]), **peer)
        self.attributes = Peer(fingerprint.ATTRIBUTES, face_attributes_pb2_grpc.FaceAttributesStub(self.channels[1]),
                               **peer)
        self.storage = Peer("data-storage", data_storage_pb2_grpc.DataStorageStub(self.channels[2]), **peer)
        self.fingerprint = Fingerprint([self.landmark, self.attributes], settings.cache_models_refresh_seconds)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def _cached(self, tenant: str, key: str, deadline: float | None) -> common_pb2.AnalysisResult | None:
        try:
            request = data_storage_pb2.LookupCacheRequest(cache_key=key, tenant=tenant)
            found = await self.storage.call("LookupCache", request, deadline, timeout=CACHE_LOOKUP_SECONDS)
        except PeerError as err:
            metrics.CACHE_LOOKUPS.labels("miss" if err.peer_code == grpc.StatusCode.NOT_FOUND else "error").inc()
            return None
        metrics.CACHE_LOOKUPS.labels("hit").inc()
        result = found.result
        result.cached = True
        return result

    async def analyze(self, data: bytes, options: Options, deadline: float | None = None, *,
                      tenant: str) -> common_pb2.AnalysisResult:
        """Analyzes `data` for `tenant`, whose cache it looks in and whose results it adds to, as
        `options` (checked: Options.parse) ask: a peer is asked only for what they need, and
        face-attributes not at all when no attribute is wanted.

        Raises imagecodec.InputError for the client's bad input and PeerError for a peer's failure."""
        started = time.perf_counter()
        timings: list = []
        with timing.stage(timings, "inspect"):
            # Hashing 20 MB takes ~50 ms: off the event loop.
            header = await run_blocking(imagecodec.inspect, data, self.limits)
        # The key: the image, the models (with their settings) that answer for it under these options,
        # and the actions asked for; see fingerprint.py.
        use_cache = not options.skip_cache and not options.no_store
        # Crops at the size face-attributes' models use, not larger: less to warp, send and shrink.
        face_size = await self.fingerprint.face_size(options)
        if use_cache and (models_now := await self.fingerprint.current(options, face_size)) is not None:
            hit = await self._cached(tenant, fingerprint.cache_key(header.sha256, models_now, options), deadline)
            if hit is not None:
                return hit

        wanted = replace(options.detect, face_size=face_size)
        detected = await self.landmark.call("DetectFaces", wanted.request(data), deadline, client_input=True)
        attrs = face_attributes_pb2.PredictAttributesResponse()
        called_attributes = bool(detected.faces and options.attribute_tasks)
        if called_attributes:
            attrs = await self.attributes.call(
                "PredictAttributes", options.attributes_request([f.crop for f in detected.faces]), deadline)
            if len(attrs.attributes) != len(detected.faces):
                raise PeerError(grpc.StatusCode.INTERNAL, "face-attributes answered for a different face count")

        created = timestamp_pb2.Timestamp()
        created.GetCurrentTime()
        result = common_pb2.AnalysisResult(
            analysis_id=uuid.uuid4().hex,
            image=common_pb2.ImageInfo(width=header.width, height=header.height, sha256=header.sha256,
                                       format=header.format),
            models=[*detected.models, *attrs.models],
            created_at=created,
        )
        for face, attr in zip(detected.faces, attrs.attributes or [None] * len(detected.faces)):
            out = result.faces.add(box=face.box, detection_score=face.detection_score, landmarks=face.landmarks)
            for field in options.attribute_tasks if attr is not None else ():  # those not asked stay unset
                if attr.HasField(field):
                    getattr(out, field).CopyFrom(getattr(attr, field))
        metrics.FACES_PER_IMAGE.observe(len(result.faces))
        result.timings.extend([*timings, *detected.timings, *attrs.timings])

        if not options.no_store:
            with timing.stage(result.timings, "data_storage"):
                skipped = () if called_attributes else (self.attributes.name,)
                models_digest = self.fingerprint.stored_digest(list(result.models), skipped, options)
                key = fingerprint.cache_key(header.sha256, models_digest, options)
                await self._store(tenant, result, key, deadline)
        result.timings.add(stage="total", seconds=time.perf_counter() - started)
        return result

    async def _store(self, tenant: str, result: common_pb2.AnalysisResult, key: str,
                     deadline: float | None) -> None:
        try:
            request = data_storage_pb2.StoreResultRequest(result=result, cache_key=key, tenant=tenant)
            await self.storage.call("StoreResult", request, deadline)
            result.stored = True
        except PeerError as err:
            if err.code == grpc.StatusCode.CANCELLED:
                raise
            # The client still gets its analysis; the answer says it was not kept.
            result.storage_error = f"data-storage: {err.message}"
            log_fields(log, logging.WARNING, "result not stored", analysis_id=result.analysis_id,
                       code=err.code.name)
