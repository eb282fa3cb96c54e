"""face-landmark gRPC service."""

from __future__ import annotations

import logging

import grpc
import numpy as np

from faceanalysis import models
from faceanalysis.face_landmark.landmarker import Landmarker
from faceanalysis.runtime import config, rawimage, services, timing
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.runtime.server import NotReady, ServiceApp
from faceanalysis.v1 import common_pb2, face_landmark_pb2, face_landmark_pb2_grpc

log = logging.getLogger(__name__)


class FaceLandmarkServicer(face_landmark_pb2_grpc.FaceLandmarkServicer):
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.landmarker: Landmarker | None = None

    def load(self) -> None:
        try:
            self.landmarker = Landmarker(self.settings.models_dir, self.settings.detector,
                                         self.settings.detection_threshold, self.settings.crop_size)
        except models.ModelMissing as err:
            raise NotReady(str(err)) from None
        # Warm-up: one real detection on a blank frame proves the models run.
        self.landmarker.analyze(np.zeros((240, 320, 3), dtype=np.uint8))

    def DetectFaces(self, request, context):
        if self.landmarker is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "face-landmark is still loading its models")
        try:
            bgr = rawimage.from_message(request.image)
        except rawimage.BadRawImage as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad image: {err}")
        timings: list = []
        with timing.stage(timings, "face_landmark"):
            faces = self.landmarker.analyze(bgr)
        log_fields(log, logging.DEBUG, "detected", faces=len(faces), width=bgr.shape[1], height=bgr.shape[0])
        return face_landmark_pb2.DetectFacesResponse(
            faces=[
                face_landmark_pb2.DetectedFace(
                    box=common_pb2.BoundingBox(x=int(round(f.box[0])), y=int(round(f.box[1])),
                                               width=int(round(f.box[2])), height=int(round(f.box[3]))),
                    detection_score=min(1.0, max(0.0, f.score)),
                    landmarks=[common_pb2.Point(x=float(px), y=float(py)) for px, py in f.landmarks],
                    crop=face_landmark_pb2.AlignedCrop(image=rawimage.to_message(f.crop),
                                                       face_width=f.face_width, face_height=f.face_height),
                )
                for f in faces
            ],
            models=timing.model_infos(self.landmarker.model_infos),
            timings=timings,
        )


def build(settings: config.Settings) -> ServiceApp:
    servicer = FaceLandmarkServicer(settings)
    return ServiceApp(
        spec=services.FACE_LANDMARK,
        register=lambda server: face_landmark_pb2_grpc.add_FaceLandmarkServicer_to_server(servicer, server),
        load=servicer.load,
        reflected=(services.FACE_LANDMARK.grpc_service,),
        max_message_bytes=settings.raw_image_message_bytes,
    )
