"""Crops at the size the attribute models use: face-attributes names the face size each model
needs, image-input asks face-landmark for it, and face-landmark shrinks crops to it (never
enlarging them), over real gRPC to the shared stack's real services and models."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from faceanalysis.face_attributes.predictor import face_size
from faceanalysis.image_input.fingerprint import ATTRIBUTES, Fingerprint
from faceanalysis.runtime.channels import Peer
from faceanalysis.runtime.options import ACTION_VALUES, Options
from faceanalysis.v1 import (common_pb2, face_attributes_pb2_grpc, face_landmark_pb2, face_landmark_pb2_grpc,
                             image_input_pb2)
from tests.support import image, model_margin, unique_photo

PORTRAIT = "face_recognition/obama.jpg"  # one face, its box 240x329 px: its crops are shrunk
SMALL = "face_recognition/obama_small.jpg"  # one face about 60 px wide: never enlarged


@pytest.fixture(scope="module")
def landmark(local_stack):
    with grpc.insecure_channel(local_stack.target("face-landmark"),
                               options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        yield face_landmark_pb2_grpc.FaceLandmarkStub(channel)


def detect(landmark, relative: str, face_size: int = 0) -> face_landmark_pb2.DetectFacesResponse:
    request = face_landmark_pb2.DetectFacesRequest(image=image(relative).read_bytes(), face_size=face_size)
    return landmark.DetectFaces(request, timeout=60)


def test_face_size_shrinks_large_faces_only(landmark):
    (full,) = detect(landmark, PORTRAIT).faces
    (sized,) = detect(landmark, PORTRAIT, face_size=160).faces
    assert max(full.crop.face_width, full.crop.face_height) > 200  # the crop size alone kept it larger
    assert max(sized.crop.face_width, sized.crop.face_height) == pytest.approx(160, abs=1)
    assert sized.crop.image.width < full.crop.image.width
    assert sized.box == full.box and list(sized.landmarks) == list(full.landmarks)  # only the crop changes
    (small,) = detect(landmark, SMALL).faces
    (small_sized,) = detect(landmark, SMALL, face_size=160).faces
    assert small_sized.crop.image == small.crop.image  # already smaller: never enlarged


@pytest.mark.parametrize("bad", [-1, 8, 4096])
def test_face_size_out_of_range_is_invalid_argument(landmark, bad):
    with pytest.raises(grpc.RpcError) as err:
        detect(landmark, PORTRAIT, face_size=bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "face_size must be between 16 and 2048" in err.value.details()


def test_image_input_asks_for_the_face_size_of_the_models_that_answer(local_stack, models_dir):
    """What image-input puts in DetectFacesRequest.face_size, from the served models' own margins."""
    async def sizes():
        channels = [grpc.aio.insecure_channel(local_stack.target(name)) for name in ("face-landmark", ATTRIBUTES)]
        try:
            stubs = [face_landmark_pb2_grpc.FaceLandmarkStub(channels[0]),
                     face_attributes_pb2_grpc.FaceAttributesStub(channels[1])]
            fingerprint = Fingerprint([Peer(name, stub, timeout=10, retry_seconds=0)
                                       for name, stub in zip(("face-landmark", ATTRIBUTES), stubs)], 30)
            everything = await fingerprint.face_size(Options())
            landmarks_only = await fingerprint.face_size(
                Options.parse(common_pb2.AnalysisOptions(actions=[ACTION_VALUES["landmarks"]])))
            return everything, landmarks_only
        finally:
            for channel in channels:
                await channel.close()

    everything, landmarks_only = asyncio.run(sizes())
    assert everything == face_size(model_margin(models_dir)) == 160  # the stand-ins' 0.4 margin: 224 / 1.4
    assert landmarks_only is None  # no attribute wanted: no crops to size


def test_a_result_names_the_face_size_and_is_found_again_in_the_cache(api):
    """The face size is part of what the result names, so the cache key holds it: the lookup
    (before face-landmark is called) and the stored result must agree on it, or nothing hits."""
    request = image_input_pb2.AnalyzeImageRequest(image=unique_photo(PORTRAIT))
    first = api.AnalyzeImage(request, timeout=120).result
    (landmarks,) = [m for m in first.models if m.task == "landmarks"]
    assert dict(landmarks.parameters) == {"crop_size": "448", "face_size": "160"}
    again = api.AnalyzeImage(request, timeout=120).result
    assert again.cached and again.analysis_id == first.analysis_id
