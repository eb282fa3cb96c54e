"""The result cache is keyed by the image and by the models and settings that answer for it:
new weights, another margin, detector, threshold or crop size miss the cache; the same ones hit it."""

from __future__ import annotations

import shutil

import grpc
import onnx
import pytest

from faceanalysis.cli.stack import LocalStack
from faceanalysis.face_attributes.predictor import MODEL_FILES
from faceanalysis.image_input import fingerprint
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.support import image

PHOTO = "face_recognition/two_people.jpg"


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("cache-key")
    # image-input asks its peers for their models on every lookup, so a restarted peer counts at once.
    env = {"image-input": {"FACEANALYSIS_CACHE_MODELS_REFRESH_SECONDS": "0"}}
    with LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work, random_ports=True,
                    extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def analyze(stack):
    channel = grpc.insecure_channel(stack.target("image-input"),
                                    options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    data = image(PHOTO).read_bytes()

    def call() -> common_pb2.AnalysisResult:
        return stub.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=data), timeout=60).result

    yield call
    channel.close()


def restart(stack: LocalStack, name: str, **env) -> None:
    """`name` again with these settings (FACEANALYSIS_X="..."), SERVING before it returns."""
    stack.stop_service(name)
    stack.extra_env[name] = env
    stack.start_service(name)
    stack.wait_serving([name], timeout=60)


def misses_then_hits(analyze) -> common_pb2.AnalysisResult:
    first = analyze()
    assert not first.cached, "a change of models or settings must miss the cache"
    again = analyze()
    assert again.cached and again.analysis_id == first.analysis_id
    return first


def parameters(result, name: str) -> dict[str, str]:
    (model,) = [m for m in result.models if m.name == name]
    return dict(model.parameters)


def test_the_same_models_hit_the_cache(analyze):
    first = analyze()
    second = analyze()
    assert second.cached and second.analysis_id == first.analysis_id


def test_a_photo_without_faces_hits_the_cache_too(stack):
    """No face: face-attributes is never called, yet the key still names the models it serves."""
    with grpc.insecure_channel(stack.target("image-input")) as channel:
        stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
        request = image_input_pb2.AnalyzeImageRequest(image=image("dlib/dogs.jpg").read_bytes())
        first = stub.AnalyzeImage(request, timeout=60).result
        again = stub.AnalyzeImage(request, timeout=60).result
    assert not first.faces and not first.cached
    assert again.cached and again.analysis_id == first.analysis_id


def test_a_new_detection_threshold_misses(stack, analyze):
    restart(stack, "face-landmark", FACEANALYSIS_DETECTION_THRESHOLD="0.85")
    result = misses_then_hits(analyze)
    assert parameters(result, "yunet")["detection_threshold"] == "0.85"


def test_another_detector_misses(stack, analyze):
    restart(stack, "face-landmark", FACEANALYSIS_DETECTOR="haar")
    result = misses_then_hits(analyze)
    assert {m.name for m in result.models} >= {"haar", "dlib_68"}


def test_another_crop_size_misses(stack, analyze):
    restart(stack, "face-landmark", FACEANALYSIS_CROP_SIZE="320")
    result = misses_then_hits(analyze)
    assert parameters(result, "dlib_68")["crop_size"] == "320"


def test_another_margin_misses(stack, analyze):
    restart(stack, "face-attributes", FACEANALYSIS_FACE_MARGIN="0.25")
    result = misses_then_hits(analyze)
    assert parameters(result, "deepface_age")["face_margin"] == "0.25"


def test_new_weights_miss(stack, analyze, tmp_path):
    """The same file name with other bytes (here: the age model with one more metadata entry)."""
    models = tmp_path / "models"
    shutil.copytree(stack.models_dir, models, symlinks=True)
    age = models / ".deepface" / "weights" / MODEL_FILES["Age"]
    model = onnx.load(str(age))
    model.metadata_props.add(key="retrained", value="yes")
    age.unlink()  # copytree may have kept a link to the shared file: never write through it
    onnx.save(model, str(age))
    before = analyze()
    restart(stack, "face-attributes", FACEANALYSIS_MODELS_DIR=str(models),
            FACEANALYSIS_FACE_MARGIN=parameters(before, "deepface_age")["face_margin"])
    result = misses_then_hits(analyze)
    sha = {m.name: m.sha256 for m in result.models}
    assert sha["deepface_age"] != {m.name: m.sha256 for m in before.models}["deepface_age"]


def test_the_key_is_the_image_and_a_digest_of_the_models():
    a = common_pb2.ModelInfo(name="yunet", task="face_detection", file="y.onnx", sha256="1" * 64,
                             parameters={"detection_threshold": "0.9"})
    b = common_pb2.ModelInfo(name="dlib_68", task="landmarks", file="d.dat", sha256="2" * 64)
    assert fingerprint.digest([a, b]) == fingerprint.digest([b, a])  # order does not matter
    changed = common_pb2.ModelInfo()
    changed.CopyFrom(a)
    changed.parameters["detection_threshold"] = "0.8"
    assert fingerprint.digest([changed, b]) != fingerprint.digest([a, b])
    assert fingerprint.cache_key("ab" * 32, fingerprint.digest([a])).startswith("ab" * 32 + ":")
