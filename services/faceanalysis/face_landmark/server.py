"""face-landmark gRPC service (grpc.aio): decodes the upload, detects, finds 68 points, crops."""

from __future__ import annotations

import logging

import cv2
import grpc
import numpy as np

from faceanalysis import models
from faceanalysis.face_landmark.landmarker import Landmarker
from faceanalysis.runtime import config, cpu, imagecodec, memory, rawimage, services, timing, work
from faceanalysis.runtime.options import DetectOptions
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.runtime.server import NotReady, ServiceApp
from faceanalysis.runtime.work import Admission, Overloaded, abort_overloaded
from faceanalysis.v1 import common_pb2, face_landmark_pb2, face_landmark_pb2_grpc

log = logging.getLogger(__name__)


def to_message(face) -> face_landmark_pb2.DetectedFace:
    """A FaceFound as the answer carries it; landmarks and crop only where they were computed."""
    x, y, w, h = (int(round(v)) for v in face.box)
    out = face_landmark_pb2.DetectedFace(box=common_pb2.BoundingBox(x=x, y=y, width=w, height=h),
                                         detection_score=min(1.0, max(0.0, face.score)))
    if face.landmarks is not None:
        out.landmarks.extend(common_pb2.Point(x=float(px), y=float(py)) for px, py in face.landmarks)
    if face.crop is not None:
        out.crop.CopyFrom(face_landmark_pb2.AlignedCrop(image=rawimage.to_message(face.crop),
                                                        face_width=face.face_width, face_height=face.face_height))
    return out


class FaceLandmarkServicer(face_landmark_pb2_grpc.FaceLandmarkServicer):
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.limits = imagecodec.Limits.from_settings(settings)
        self.admission = Admission(services.FACE_LANDMARK.name, settings.max_concurrent_images,
                                   queue=settings.admission_queue, wait_seconds=settings.admission_wait_seconds)
        self.landmarker: Landmarker | None = None
        self.model_infos: list = []

    def load(self) -> None:
        # OpenCV sizes its thread pool by the node's cores; a pod limited to 2 CPUs on a 64-core
        # node would run 64 threads that the CFS quota throttles. Size it to this container's
        # CPUs, not to 1: on 2 CPUs, the 32 shared photos took 1.58 s either way with 4 images in
        # flight, but 2.05 s instead of 3.07 s one image at a time.
        cpus = cpu.available_cpus(self.settings.cpu_limit)
        cv2.setNumThreads(cpus)
        try:
            self.landmarker = Landmarker(self.settings.models_dir, self.settings.detector,
                                         self.settings.detection_threshold, self.settings.crop_size,
                                         self.settings.detection_max_side, self.settings.detection_min_face,
                                         threads=cpus)
        except models.ModelMissing as err:
            raise NotReady(str(err)) from None
        self.model_infos = timing.model_infos(self.landmarker.model_infos)  # built once, hashes included
        # Warm-up: one real detection on a blank frame proves the models run.
        self.landmarker.analyze(np.zeros((240, 320, 3), dtype=np.uint8))

    def warm_thread(self) -> None:
        """This worker thread's detector, built and run once at the size most photos are searched at."""
        self.landmarker.analyze(np.zeros((480, self.settings.detection_max_side, 3), dtype=np.uint8))

    def _detect(self, data: bytes, wanted: DetectOptions) -> tuple[face_landmark_pb2.DetectFacesResponse,
                                                                  tuple[int, int]]:
        """Blocking: decode, detect, build the answer. The pixels die with this frame."""
        timings: list = []
        with timing.stage(timings, "decode"):
            header, bgr = imagecodec.decode(data, self.limits)
        try:
            with timing.stage(timings, "face_landmark"):
                try:
                    faces = self.landmarker.analyze(bgr, wanted.threshold, wanted.min_face, wanted.landmarks,
                                                    wanted.crops, wanted.face_size)
                except cv2.error as err:
                    # A valid image the detector cannot take (e.g. 40000x16): the input's shape,
                    # not a server fault.
                    raise imagecodec.InputError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"the face detector cannot process a {header.width}x{header.height} image: "
                        f"{err.err or err}") from None
            # The models as this request ran them (its threshold and min_face), and only those that ran.
            models = self.model_infos if wanted == DetectOptions() else [
                m for m in map(wanted.describe, self.model_infos) if m is not None]
            response = face_landmark_pb2.DetectFacesResponse(
                faces=[to_message(f) for f in faces], models=models, timings=timings)
            return response, (header.width, header.height)
        finally:
            del bgr
            memory.release(header.decoded_bytes)

    async def DescribeModels(self, request, context):
        if not self.model_infos:  # set after the landmarker: never describe a half-loaded service
            await context.abort(grpc.StatusCode.UNAVAILABLE, "face-landmark is still loading its models")
        return common_pb2.DescribeModelsResponse(models=self.model_infos)

    async def DetectFaces(self, request, context):
        if self.landmarker is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "face-landmark is still loading its models")
        try:
            wanted = DetectOptions.from_request(request)  # INVALID_ARGUMENT before any work
            response, (width, height) = await self.admission.run(self._detect, request.image, wanted,
                                                                 deadline=work.deadline(context))
        except Overloaded as err:
            await abort_overloaded(context, err)
        except imagecodec.InputError as err:
            await context.abort(err.code, err.message)
        log_fields(log, logging.DEBUG, "detected", faces=len(response.faces), width=width, height=height)
        return response


def build(settings: config.Settings) -> ServiceApp:
    servicer = FaceLandmarkServicer(settings)
    return ServiceApp(
        spec=services.FACE_LANDMARK,
        register=lambda server: face_landmark_pb2_grpc.add_FaceLandmarkServicer_to_server(servicer, server),
        load=servicer.load,
        warm_thread=servicer.warm_thread,
        reflected=(services.FACE_LANDMARK.grpc_service,),
        max_message_bytes=settings.image_message_bytes,
    )
