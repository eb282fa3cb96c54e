"""face-attributes gRPC service (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np

from faceanalysis import models
from faceanalysis.face_attributes.batcher import Batcher, DeadlineExpired, QueueFull
from faceanalysis.face_attributes.predictor import EMOTIONS, Predictor
from faceanalysis.runtime import channels, config, cpu, memory, options, rawimage, services, timing
from faceanalysis.runtime.server import NotReady, ServiceApp
from faceanalysis.runtime.work import Admission, Overloaded, abort_overloaded, run_blocking
from faceanalysis.v1 import common_pb2, face_attributes_pb2, face_attributes_pb2_grpc

log = logging.getLogger(__name__)


def to_message(face: dict) -> face_attributes_pb2.FaceAttributeSet:
    """One face's answers (Predictor.run: task -> value); the tasks not asked for stay unset."""
    out = face_attributes_pb2.FaceAttributeSet()
    if "age" in face:
        years, low, high = face["age"]
        out.age.CopyFrom(common_pb2.Age(years=years, low=low, high=high))
    if "gender" in face:
        woman = face["gender"]
        is_woman = woman >= 0.5
        out.gender.CopyFrom(common_pb2.GenderPrediction(
            label=common_pb2.GENDER_WOMAN if is_woman else common_pb2.GENDER_MAN,
            confidence=woman if is_woman else 1.0 - woman))
    if "emotion" in face:
        scores = face["emotion"]
        out.emotion.CopyFrom(common_pb2.EmotionPrediction(
            dominant=EMOTIONS[int(np.argmax(scores))], scores={name: float(p) for name, p in zip(EMOTIONS, scores)}))
    return out


class FaceAttributesServicer(face_attributes_pb2_grpc.FaceAttributesServicer):
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.predictor: Predictor | None = None
        self.model_infos: list = []
        self.batcher: Batcher | None = None
        # Faces from arrival to answer (preprocessing included); the batcher's own queue bound
        # is the same number, a backstop for faces this count has not seen yet.
        self.admission = Admission(services.FACE_ATTRIBUTES.name, settings.batch_queue_max_faces, unit="faces")

    def load(self) -> None:
        try:
            # Each model's face margin comes from its weights' metadata; FACEANALYSIS_FACE_MARGIN,
            # when set, overrides it (logged where it differs).
            self.predictor = Predictor(self.settings.models_dir, cpus=cpu.available_cpus(self.settings.cpu_limit),
                                       int8_models=self.settings.int8_models, face_margin=self.settings.face_margin)
        except models.ModelMissing as err:
            raise NotReady(str(err)) from None
        if self.predictor.large_fp32_weights():
            memory.map_large_blocks()  # what such a pod peaks at: see runtime/memory.py
        # The result's provenance, built once: file, sha256, margin and precision per model.
        self.model_infos = timing.model_infos(self.predictor.model_infos)
        # Warm-up: a real inference of every model, at one face and at a full batch, the two shapes
        # most batches have (a call is never run in pieces larger than batch_max_size).
        for size in sorted({1, self.settings.batch_max_size}):
            self.predictor.predict(np.zeros(self.predictor.batch_shape(size), dtype=np.float32))
        self.batcher = Batcher(self.predictor.run, self.settings.batch_max_size, self.settings.batch_wait_ms,
                               self.settings.batch_queue_max_faces, tasks=options.ATTRIBUTE_TASKS)

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()

    def _prepare(self, crops) -> np.ndarray:
        """Blocking: the model input batch for a call's crops: (n, 224, 224, 3) float32, or
        (n, groups, 224, 224, 3) when the models want different margins."""
        faces = []
        for crop in crops:
            if crop.face_width <= 0 or crop.face_height <= 0:
                raise rawimage.BadRawImage(f"face size in the crop must be positive, got "
                                           f"{crop.face_width}x{crop.face_height}")
            pixels = rawimage.from_message(crop.image)
            faces.append(self.predictor.prepare_crop(pixels, crop.face_width, crop.face_height))
        return np.stack(faces) if faces else np.zeros(self.predictor.batch_shape(0), np.float32)

    async def DescribeModels(self, request, context):
        if self.batcher is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "face-attributes is still loading its models")
        return common_pb2.DescribeModelsResponse(models=self.model_infos)

    async def PredictAttributes(self, request, context):
        if self.batcher is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "face-attributes is still loading its models")
        try:
            with self.admission.admit(len(request.crops)):
                return await self._predict(request, context)
        except Overloaded as err:
            await abort_overloaded(context, err)

    async def _predict(self, request, context):
        try:
            tasks = options.attribute_tasks(request.tasks)
        except options.InvalidOption as err:
            await context.abort(err.code, err.message)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        timings: list = []
        with timing.stage(timings, "face_attributes_preprocess"):
            try:
                batch = await run_blocking(self._prepare, request.crops)
            except rawimage.BadRawImage as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad crop: {err}")
        with timing.stage(timings, "face_attributes_inference"):
            try:
                future = self.batcher.submit(batch, deadline, tasks)
            except QueueFull as err:
                await abort_overloaded(context, err)
            try:
                # If this call is cancelled, so is the future: the batcher then drops its faces.
                results = await asyncio.wrap_future(future)
            except DeadlineExpired:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while waiting for inference")
        return face_attributes_pb2.PredictAttributesResponse(
            attributes=[to_message(a) for a in results],
            models=[m for m in self.model_infos if m.task in tasks],  # only the models that ran
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
