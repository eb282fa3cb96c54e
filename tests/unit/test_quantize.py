"""int8 attribute models: `faceanalysis models quantize` writes real QDQ models, calibrated on real
faces; face-attributes serves them when FACEANALYSIS_INT8_MODELS names them; they agree with fp32.

Real models throughout: the stand-ins pulled from the local mirror (FACEANALYSIS_MODEL_MIRROR),
calibrated on the shared photos, compared on the labelled UTKFace chips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from faceanalysis import models
from faceanalysis.face_attributes.predictor import MODEL_FILES, Predictor, session_inputs
from faceanalysis.models import provenance, quantize
from faceanalysis.runtime import config

from tests.support import FED_PREPROCESSING as FED, IMAGES, SHARED

UTKFACE = SHARED / "eval" / "utkface-dev"
LANDMARK_FILES = ("face_detection_yunet_2023mar.onnx", "shape_predictor_68_face_landmarks.dat")
THREADS = 2


def models_copy(source: Path, target: Path) -> Path:
    """A models dir of our own: the attribute models copied (int8 files get written beside them),
    the face-landmark models linked."""
    weights = target / ".deepface" / "weights"
    weights.mkdir(parents=True)
    for name in LANDMARK_FILES:
        (target / name).symlink_to((source / name).resolve())
    for name in MODEL_FILES.values():
        shutil.copy2(source / ".deepface" / "weights" / name, weights / name)
    return target


def int8_weighted(model) -> list[str]:
    """Op types (in graph order) of the nodes whose weight is an int8 initializer, dequantized."""
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.op_type for n in model.graph.node
            if n.op_type in ("Conv", "MatMul", "Gemm") and dequantized.get(n.input[1]) in int8]


def pixel_convs(model) -> list[str]:
    """Names of the convolutions fed by the model's input through layout and normalisation ops only."""
    pixels = {i.name for i in model.graph.input}
    found = []
    for node in model.graph.node:
        if node.input and node.input[0] in pixels:
            if node.op_type in quantize.PIXEL_PASSTHROUGH:
                pixels.update(node.output)
            elif node.op_type == "Conv":
                found.append(node.name)
    return found


@pytest.fixture(scope="module")
def quantized(models_dir, tmp_path_factory) -> Path:
    """A models dir whose three attribute models have int8 copies, calibrated on the shared photos."""
    if not UTKFACE.is_dir():
        pytest.fail(f"{UTKFACE} is missing: the shared folder must sit beside the repository")
    directory = models_copy(models_dir, tmp_path_factory.mktemp("quantized"))
    # Faces are cut at each model's own margin (the stand-ins: 0.4, from the manifest by their sha256).
    written = quantize.quantize_models(directory / ".deepface" / "weights", IMAGES, limit=100, progress=False)
    assert set(written) == {"age", "gender", "emotion"}
    return directory


@pytest.fixture
def restore_deepface_clients(models_dir):
    """DeepFace keeps one client per model for the whole process, and a Predictor puts its
    sessions in them: leave them on fp32, as the other test modules expect."""
    yield
    Predictor(models_dir, cpus=THREADS)


def test_int8_path_sits_beside_the_fp32_file():
    assert quantize.int8_path(Path("/m/age_model_weights.onnx")) == Path("/m/age_model_weights.int8.onnx")
    assert quantize.INT8_SUFFIX == ".int8.onnx"


def test_int8_files_are_qdq_models_with_int8_weights(quantized):
    weights = quantized / ".deepface" / "weights"
    for name, file in MODEL_FILES.items():
        path = quantize.int8_path(weights / file)
        assert path.is_file(), name
        model = onnx.load(str(path))
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, name
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert convs, name
        # Every convolution's weight is int8 except those that read the photo's colour channels.
        first = pixel_convs(model)
        assert first, name
        assert int8_weighted(model).count("Conv") == len(convs) - len(first), name
        # Activations are uint8 (U8S8, what ONNX Runtime's x86 kernels take).
        assert any(t.data_type == onnx.TensorProto.UINT8 for t in model.graph.initializer), name
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["quantized_from"] == file, name
        assert int(meta["calibration_faces"]) >= 30, name
        # The copy inherits its fp32 file's preprocessing (the stand-ins' margin), in its own metadata.
        assert json.loads(meta["faceanalysis.preprocessing"])["face_margin"] == 0.4, name
        assert meta["faceanalysis.quantized_from_sha256"] == provenance.sha256_of(weights / file), name


def test_int8_copies_are_recorded_with_the_fp32_preprocessing(quantized):
    """models quantize records each int8 copy in the models directory's models.lock.json, with the
    fp32 file's preprocessing, and `models verify` reports them."""
    from faceanalysis.models import verify

    record = provenance.read_record(quantized)
    for name, file in MODEL_FILES.items():
        fp32 = quantized / ".deepface" / "weights" / file
        entry = record[f".deepface/weights/{quantize.int8_path(fp32).name}"]
        assert entry["identity"] == "int8" and entry["preprocessing"]["face_margin"] == 0.4, name
        assert entry["sha256"] == provenance.sha256_of(quantize.int8_path(fp32)), name
        assert entry["derived_from"]["sha256"] == provenance.sha256_of(fp32), name
    checks = {c.path: c for c in verify.verify(quantized, service="face-attributes")}
    int8 = checks[".deepface/weights/age_model_weights.int8.onnx"]
    assert int8.ok and int8.preprocessing["face_margin"] == 0.4 and "int8 copy" in int8.what


def test_calibration_tensors_are_what_deepface_feeds_the_sessions(models_dir, restore_deepface_clients):
    """The emotion model gets 48x48 gray faces from DeepFace's client: calibration must see exactly
    those, not the (224, 224, 3) batch."""
    faces = list(quantize.iter_faces(UTKFACE, models_dir, limit=4, progress=False))
    batch = np.stack(faces)
    assert batch.shape == (4, 224, 224, 3) and batch.dtype == np.float32
    ours = session_inputs(batch)
    assert ours["Emotion"].shape == (4, 48, 48, 1)

    predictor = Predictor(models_dir, cpus=THREADS)
    fed = {}

    class Spy:
        def __init__(self, name, session):
            self.name, self.session = name, session

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, output_names, feed, *args, **kwargs):
            fed[self.name] = next(iter(feed.values()))
            return self.session.run(output_names, feed, *args, **kwargs)

    sessions = {name: client.model for name, client in predictor.clients.items()}
    try:
        for name, client in predictor.clients.items():
            client.model = Spy(name, client.model)
        predictor.predict(batch)
    finally:
        for name, client in predictor.clients.items():
            client.model = sessions[name]
    for name in MODEL_FILES:
        assert fed[name].dtype == ours[name].dtype, name
        np.testing.assert_array_equal(fed[name], ours[name], err_msg=name)


def test_predictor_serves_the_int8_files(quantized, restore_deepface_clients):
    predictor = Predictor(quantized, cpus=THREADS, int8_models="age,gender,emotion")
    weights = (quantized / ".deepface" / "weights").resolve()
    for name, file in MODEL_FILES.items():
        expected = quantize.int8_path(weights / file)
        assert Path(predictor.clients[name].model._model_path).resolve() == expected, name
    assert {m.task: m.file for m in predictor.model_infos} == {
        "age": "age_model_weights.int8.onnx", "gender": "gender_model_weights.int8.onnx",
        "emotion": "facial_expression_model_weights.int8.onnx"}
    # A result names the int8 file's own sha256, the margin it inherited and its precision.
    for m in predictor.model_infos:
        name = m.task.capitalize()
        assert m.sha256 == provenance.sha256_of(quantize.int8_path(weights / MODEL_FILES[name])), name
        assert m.parameters == {"face_margin": "0.4", **FED, "precision": "int8", "face_size": "160"}, name
    faces = np.stack(list(quantize.iter_faces(UTKFACE, quantized, limit=8, progress=False)))
    int8 = predictor.predict(faces)
    fp32 = Predictor(quantized, cpus=THREADS).predict(faces)
    assert len(int8) == len(fp32) == 8
    assert sum((a.woman >= 0.5) == (b.woman >= 0.5) for a, b in zip(int8, fp32)) >= 7
    assert np.median([abs(a.age - b.age) for a, b in zip(int8, fp32)]) < 4


def test_predictor_mixes_precisions(quantized, restore_deepface_clients):
    predictor = Predictor(quantized, cpus=THREADS, int8_models="emotion")
    files = {m.task: m.file for m in predictor.model_infos}
    assert files == {"age": "age_model_weights.onnx", "gender": "gender_model_weights.onnx",
                     "emotion": "facial_expression_model_weights.int8.onnx"}


def test_int8_agrees_with_fp32_on_utkface(quantized):
    result = quantize.agreement(quantized / ".deepface" / "weights", UTKFACE, progress=False)
    print("\n" + quantize.format_agreement(result))
    assert result["faces"] >= 95  # 100 chips, one face each (padded before detection)
    assert result["gender_agreement"] >= 0.9
    assert result["age_median_abs_diff"] <= 3.0
    assert result["age_p95_abs_diff"] <= 8.0
    assert result["emotion_agreement"] >= 0.85


def test_missing_int8_file_names_the_command(models_dir, tmp_path):
    directory = models_copy(models_dir, tmp_path / "models")
    with pytest.raises(models.ModelMissing) as err:
        Predictor(directory, cpus=THREADS, int8_models="gender")
    message = str(err.value)
    assert "gender_model_weights.int8.onnx" in message
    assert "faceanalysis models quantize --calibration DIR" in message


def test_int8_models_setting_is_validated(monkeypatch):
    monkeypatch.setenv("FACEANALYSIS_INT8_MODELS", " Emotion ,age")
    assert config.load().int8_models == "age,emotion"
    monkeypatch.setenv("FACEANALYSIS_INT8_MODELS", "age,race")
    with pytest.raises(SystemExit) as err:
        config.load()
    message = str(err.value)
    assert "FACEANALYSIS_INT8_MODELS" in message and "race" in message and "age, gender, emotion" in message
    with pytest.raises(ValueError, match="race"):
        Predictor(Path("/nonexistent"), int8_models="race")


def test_photos_without_faces_are_a_clear_error(models_dir, tmp_path):
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "grey.jpg"), np.full((240, 320, 3), 128, np.uint8))
    cv2.imwrite(str(photos / "black.png"), np.zeros((900, 700, 3), np.uint8))
    directory = models_copy(models_dir, tmp_path / "models")
    with pytest.raises(quantize.QuantizeError, match="no faces found in the 2 photo"):
        quantize.quantize_models(directory / ".deepface" / "weights", photos, progress=False)
    assert not list((directory / ".deepface" / "weights").glob("*.int8.onnx"))


def test_models_saved_with_external_data_are_quantized(models_dir, tmp_path, monkeypatch):
    """The benchmark's VGG-sized models keep their weights in external data: so does this small
    model with the emotion contract. Its int8 copy is written as one file, or (for models too large
    for protobuf, forced here) with its own external data."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 1, 3, 3)) * 0.5).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((32 * 24 * 24, 7)) * 0.01).astype(np.float32), "fw"),
             numpy_helper.from_array(np.zeros(7, np.float32), "fb")]
    nodes = [helper.make_node("Transpose", ["input"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["g"]),
             helper.make_node("Softmax", ["g"], ["output"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 48, 48, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    weights = tmp_path / "weights"
    weights.mkdir()
    fp32 = weights / MODEL_FILES["Emotion"]
    onnx.save(model, str(fp32), save_as_external_data=True, location=fp32.name + ".data", size_threshold=0)
    assert (weights / (fp32.name + ".data")).is_file()

    written = quantize.quantize_models(weights, UTKFACE, names=("emotion",), limit=8, progress=False,
                                       models_dir=models_dir)
    out = written["emotion"]
    assert out == quantize.int8_path(fp32) and not quantize._external_data_files(out)
    # The FC layer (18432 x 7 weights) is int8; the convolution reads the pixels, so it stays fp32.
    assert int8_weighted(onnx.load(str(out))) == ["Gemm"]

    monkeypatch.setattr(quantize, "EXTERNAL_DATA_BYTES", 0)
    quantize.quantize_models(weights, UTKFACE, names=("emotion",), limit=8, progress=False,
                             models_dir=models_dir)
    data = quantize._external_data_files(out)
    assert data and all(p.is_file() and p.parent == weights for p in data)
    assert not list(weights.glob(".quantize-*"))  # work files are gone
    result = quantize.agreement(weights, UTKFACE, names=("emotion",), progress=False, models_dir=models_dir,
                                limit=8)
    assert result["faces"] == 8 and 0 <= result["emotion_agreement"] <= 1


def test_cli_quantizes_and_prints_the_agreement(models_dir, tmp_path):
    directory = models_copy(models_dir, tmp_path / "models")
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(directory))
    env.pop("FACEANALYSIS_FACE_MARGIN", None)  # the models' own margin
    proc = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "models", "quantize", "--calibration",
                           str(IMAGES), "--eval", str(UTKFACE), "--only", "gender", "--limit", "30", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gender_model_weights.int8.onnx" in proc.stdout
    assert "gender agreement" in proc.stdout and "age |fp32" not in proc.stdout
    assert (directory / ".deepface" / "weights" / "gender_model_weights.int8.onnx").is_file()
    assert not (directory / ".deepface" / "weights" / "age_model_weights.int8.onnx").exists()


def test_cli_says_to_pull_when_the_fp32_model_is_missing(tmp_path):
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(tmp_path / "empty"))
    proc = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "models", "quantize", "--calibration",
                           str(UTKFACE), "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "faceanalysis models pull" in proc.stderr


def test_face_attributes_service_takes_int8_models_from_its_settings(quantized, tmp_path, models_dir,
                                                                      restore_deepface_clients):
    from faceanalysis.face_attributes.server import FaceAttributesServicer
    from faceanalysis.runtime.server import NotReady

    servicer = FaceAttributesServicer(config.Settings(models_dir=quantized, int8_models="gender", cpu_limit=THREADS))
    servicer.load()
    try:
        files = {m.task: m.file for m in servicer.predictor.model_infos}
        assert files["gender"] == "gender_model_weights.int8.onnx" and files["age"] == "age_model_weights.onnx"
    finally:
        servicer.close()
    plain = models_copy(models_dir, tmp_path / "models")
    servicer = FaceAttributesServicer(config.Settings(models_dir=plain, int8_models="age", cpu_limit=THREADS))
    with pytest.raises(NotReady, match="faceanalysis models quantize --calibration DIR"):
        servicer.load()
