"""face-attributes gRPC service."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
import numpy as np

from faceanalysis import models
from faceanalysis.face_attributes.batcher import Batcher
from faceanalysis.face_attributes.predictor import EMOTIONS, Predictor, cut_face
from faceanalysis.runtime import channels, config, rawimage, services, timing
from faceanalysis.runtime.server import NotReady, ServiceApp
from faceanalysis.v1 import common_pb2, face_attributes_pb2, face_attributes_pb2_grpc

log = logging.getLogger(__name__)


def to_message(attrs) -> face_attributes_pb2.FaceAttributeSet:
    is_woman = attrs.woman >= 0.5
    return face_attributes_pb2.FaceAttributeSet(
        age=common_pb2.Age(years=attrs.age, low=attrs.age_low, high=attrs.age_high),
        gender=common_pb2.GenderPrediction(
            label=common_pb2.GENDER_WOMAN if is_woman else common_pb2.GENDER_MAN,
            confidence=attrs.woman if is_woman else 1.0 - attrs.woman,
        ),
        emotion=common_pb2.EmotionPrediction(
            dominant=EMOTIONS[int(np.argmax(attrs.emotions))],
            scores={name: float(p) for name, p in zip(EMOTIONS, attrs.emotions)},
        ),
    )


class FaceAttributesServicer(face_attributes_pb2_grpc.FaceAttributesServicer):
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None

    def load(self) -> None:
        try:
            self.predictor = Predictor(self.settings.models_dir)
        except models.ModelMissing as err:
            raise NotReady(str(err)) from None
        # Warm-up: one real inference of every model.
        self.predictor.predict(np.zeros((1, 224, 224, 3), dtype=np.float32))
        self.batcher = Batcher(self.predictor.predict, self.settings.batch_max_size, self.settings.batch_wait_ms)

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()

    def PredictAttributes(self, request, context):
        if self.batcher is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "face-attributes is still loading its models")
        timings: list = []
        with timing.stage(timings, "face_attributes_preprocess"):
            try:
                faces = [
                    self.predictor.prepare(cut_face(rawimage.from_message(c.image), c.face_width,
                                                    c.face_height, self.settings.face_margin))
                    for c in request.crops
                ]
            except rawimage.BadRawImage as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad crop: {err}")
        with timing.stage(timings, "face_attributes_inference"):
            batch = np.stack(faces) if faces else np.zeros((0, 224, 224, 3), np.float32)
            try:
                results = self.batcher.submit(batch).result(timeout=context.time_remaining())
            except FutureTimeout:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while waiting for inference")
        return face_attributes_pb2.PredictAttributesResponse(
            attributes=[to_message(a) for a in results],
            models=timing.model_infos(self.predictor.model_infos),
            timings=timings,
        )


def build(settings: config.Settings) -> ServiceApp:
    servicer = FaceAttributesServicer(settings)
    return ServiceApp(
        spec=services.FACE_ATTRIBUTES,
        register=lambda server: face_attributes_pb2_grpc.add_FaceAttributesServicer_to_server(servicer, server),
        load=servicer.load,
        close=servicer.close,
        reflected=(services.FACE_ATTRIBUTES.grpc_service,),
        max_message_bytes=channels.PEER_MESSAGE_BYTES,
    )
