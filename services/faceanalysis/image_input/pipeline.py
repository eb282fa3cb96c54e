"""One image through the pipeline: decode → face-landmark → face-attributes → data-storage."""

from __future__ import annotations

import logging
import time
import uuid

import grpc
from google.protobuf import timestamp_pb2

from faceanalysis.image_input.decode import InputError, decode
from faceanalysis.runtime import channels, config, metrics, rawimage, timing
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.v1 import (
    common_pb2,
    data_storage_pb2,
    data_storage_pb2_grpc,
    face_attributes_pb2,
    face_attributes_pb2_grpc,
    face_landmark_pb2,
    face_landmark_pb2_grpc,
)

log = logging.getLogger(__name__)
# Bumped when a change alters results, so the cache never serves answers of an older pipeline.
PIPELINE_VERSION = "1"


class AnalysisError(InputError):
    """A failed analysis, with the status code the client should see."""


def peer_error(peer: str, err: grpc.RpcError) -> AnalysisError:
    code = err.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return AnalysisError(code, f"{peer} is unavailable: {err.details()}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return AnalysisError(code, f"{peer} refused the image: {err.details()}")
    return AnalysisError(grpc.StatusCode.INTERNAL, f"{peer} failed ({code.name}): {err.details()}")


def cache_key(sha256: str) -> str:
    # No request option changes what the pipeline computes (skip_cache and no_store only change
    # how the result is handled), so the key is the image plus the pipeline version. An option
    # that changes results must join the key.
    return f"{sha256}:v{PIPELINE_VERSION}"


class Pipeline:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        retries = settings.rpc_retries
        self.landmark = face_landmark_pb2_grpc.FaceLandmarkStub(channels.dial(
            settings.landmark_target, retries=retries, max_message_bytes=settings.raw_image_message_bytes))
        self.attributes = face_attributes_pb2_grpc.FaceAttributesStub(channels.dial(
            settings.attributes_target, retries=retries, max_message_bytes=channels.PEER_MESSAGE_BYTES))
        self.storage = data_storage_pb2_grpc.DataStorageStub(
            channels.dial(settings.storage_target, retries=retries))

    def _timeout(self, deadline: float | None) -> float:
        budget = self.settings.rpc_timeout_seconds
        if deadline is not None:
            budget = min(budget, max(0.001, deadline - time.monotonic()))
        return budget

    def _cached(self, key: str, deadline: float | None) -> common_pb2.AnalysisResult | None:
        try:
            found = self.storage.LookupCache(data_storage_pb2.LookupCacheRequest(cache_key=key),
                                             timeout=min(2.0, self._timeout(deadline)))
        except grpc.RpcError as err:
            metrics.CACHE_LOOKUPS.labels("miss" if err.code() == grpc.StatusCode.NOT_FOUND else "error").inc()
            return None
        metrics.CACHE_LOOKUPS.labels("hit").inc()
        result = found.result
        result.cached = True
        return result

    def analyze(self, data: bytes, options: common_pb2.AnalysisOptions,
                deadline: float | None = None) -> common_pb2.AnalysisResult:
        started = time.perf_counter()
        timings: list = []
        with timing.stage(timings, "decode"):
            image = decode(data, max_bytes=self.settings.max_image_bytes,
                           max_pixels=self.settings.max_image_pixels, min_side=self.settings.min_image_side)
        key = cache_key(image.sha256)
        use_cache = not options.skip_cache and not options.no_store
        if use_cache and (hit := self._cached(key, deadline)) is not None:
            return hit

        try:
            detected = self.landmark.DetectFaces(
                face_landmark_pb2.DetectFacesRequest(image=rawimage.to_message(image.bgr)), timeout=self._timeout(deadline))
        except grpc.RpcError as err:
            raise peer_error("face-landmark", err) from None
        attrs = face_attributes_pb2.PredictAttributesResponse()
        if detected.faces:
            try:
                attrs = self.attributes.PredictAttributes(
                    face_attributes_pb2.PredictAttributesRequest(crops=[f.crop for f in detected.faces]),
                    timeout=self._timeout(deadline))
            except grpc.RpcError as err:
                raise peer_error("face-attributes", err) from None
            if len(attrs.attributes) != len(detected.faces):
                raise AnalysisError(grpc.StatusCode.INTERNAL, "face-attributes answered for a different face count")

        created = timestamp_pb2.Timestamp()
        created.GetCurrentTime()
        result = common_pb2.AnalysisResult(
            analysis_id=uuid.uuid4().hex,
            image=common_pb2.ImageInfo(width=image.width, height=image.height, sha256=image.sha256,
                                       format=image.format),
            models=[*detected.models, *attrs.models],
            created_at=created,
        )
        for face, attr in zip(detected.faces, attrs.attributes or [None] * len(detected.faces)):
            out = result.faces.add(box=face.box, detection_score=face.detection_score, landmarks=face.landmarks)
            if attr is not None:
                out.age.CopyFrom(attr.age)
                out.gender.CopyFrom(attr.gender)
                out.emotion.CopyFrom(attr.emotion)
        metrics.FACES_PER_IMAGE.observe(len(result.faces))
        result.timings.extend([*timings, *detected.timings, *attrs.timings])

        if options.no_store:
            result.timings.add(stage="total", seconds=time.perf_counter() - started)
            return result
        with timing.stage(result.timings, "data_storage"):
            try:
                self.storage.StoreResult(data_storage_pb2.StoreResultRequest(result=result, cache_key=key),
                                         timeout=self._timeout(deadline))
                result.stored = True
            except grpc.RpcError as err:
                # The client still gets its analysis; the answer says it was not kept.
                result.storage_error = f"data-storage: {err.code().name}: {err.details()}"
                log_fields(log, logging.WARNING, "result not stored", analysis_id=result.analysis_id,
                           code=err.code().name)
        result.timings.add(stage="total", seconds=time.perf_counter() - started)
        return result

