"""Model files carry their own preprocessing: the manifest knows files by sha256, a mirror may
describe its own, `models pull` records what it installed, face-attributes cuts each model's
face at that model's margin, and FACEANALYSIS_FACE_MARGIN is an explicit, logged override."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceanalysis import models
from faceanalysis.face_attributes.predictor import MODEL_FILES, Predictor, cut_face, prepare_face
from faceanalysis.models import provenance
from faceanalysis.models.pull import PullError, pull
from faceanalysis.runtime import config, rawimage
from faceanalysis.v1 import face_landmark_pb2
from tests.support import FED_PREPROCESSING as FED, MIRROR

THREADS = 1
SUMS = {name: h for h, name in (line.split() for line in (MIRROR / "SHA256SUMS").read_text().splitlines())}


def test_every_manifest_entry_has_a_hash_or_says_why_not():
    for entry in models.manifest().files:
        assert entry.sha256 or entry.unverified_reason, entry.name
        assert entry.known_hashes, f"{entry.name}: no file is known for it at all"


def test_the_manifest_knows_the_mirrors_stand_ins_and_their_margin():
    manifest = models.manifest()
    for file in MODEL_FILES.values():
        entry = manifest.get(file)
        official = entry.identify(entry.sha256 or "0" * 64)
        assert entry.preprocessing["face_margin"] == 0.0  # DeepFace's official weights
        stand_in = entry.identify(SUMS[file])
        assert stand_in.kind == models.VARIANT and "stand-in" in stand_in.description
        assert stand_in.preprocessing["face_margin"] == 0.4
        # A variant's preprocessing is merged over the official one.
        assert stand_in.preprocessing["input_size"] == [224, 224] == entry.preprocessing["input_size"]
        assert official.kind in (models.OFFICIAL, models.UNKNOWN)
    yunet = manifest.get("face_detection_yunet_2023mar.onnx")
    assert yunet.identify(SUMS[yunet.name]).kind == models.VARIANT  # the re-export: not the official bytes
    assert yunet.identify(yunet.sha256).kind == models.OFFICIAL


def test_pull_records_each_files_sha256_and_preprocessing(models_dir):
    record = provenance.read_record(models_dir)
    for entry in models.manifest().files:
        rec = record[entry.path]
        assert rec["sha256"] == provenance.sha256_of(entry.location(models_dir)), entry.name
        assert rec["verified_by"], entry.name
    for file in MODEL_FILES.values():
        rec = record[f".deepface/weights/{file}"]
        assert rec["identity"] == "variant" and rec["preprocessing"]["face_margin"] == 0.4, file
        assert rec["preprocessing_from"].startswith("manifest variant"), file


def copy_models(source: Path, target: Path, with_record: bool = False) -> Path:
    for entry in models.manifest().files:
        dest = entry.location(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry.location(source), dest)
    if with_record:
        shutil.copy2(source / provenance.RECORD_FILE, target / provenance.RECORD_FILE)
    return target


def test_stand_ins_run_at_their_own_margin_without_a_record(models_dir, tmp_path):
    """A models dir no pull recorded (a baked image, copied files): face-attributes hashes each file
    and finds its preprocessing in the manifest."""
    bare = copy_models(models_dir, tmp_path / "bare")
    predictor = Predictor(bare, cpus=THREADS)
    assert predictor.margins == {"Age": 0.4, "Gender": 0.4, "Emotion": 0.4}
    assert predictor.groups == (0.4,)
    for name, prov in predictor.provenance.items():
        assert prov.identity == "variant" and prov.preprocessing_from.startswith("manifest variant"), name
    infos = {m.task: m for m in predictor.model_infos}
    assert infos["age"].sha256 == SUMS["age_model_weights.onnx"]
    assert infos["gender"].parameters == {"face_margin": "0.4", **FED, "precision": "fp32", "face_size": "160"}


def test_an_explicit_margin_overrides_and_is_logged(models_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="faceanalysis.face_attributes.predictor"):
        predictor = Predictor(models_dir, cpus=THREADS, face_margin=0.1)
    assert predictor.margins == {"Age": 0.1, "Gender": 0.1, "Emotion": 0.1}
    assert {m.parameters["face_margin"] for m in predictor.model_infos} == {"0.1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert all("FACEANALYSIS_FACE_MARGIN=0.1" in w and "face margin 0.4" in w for w in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faceanalysis.face_attributes.predictor"):
        Predictor(models_dir, cpus=THREADS, face_margin=0.4)  # the same as the models': nothing to say
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_face_attributes_reads_the_override_from_its_settings(models_dir, monkeypatch):
    from faceanalysis.face_attributes.server import FaceAttributesServicer

    monkeypatch.setenv("FACEANALYSIS_FACE_MARGIN", "0.2")
    servicer = FaceAttributesServicer(config.Settings(models_dir=models_dir, cpu_limit=THREADS))
    servicer.load()
    try:
        assert servicer.predictor.margins == {"Age": 0.2, "Gender": 0.2, "Emotion": 0.2}
        assert {m.parameters["face_margin"] for m in servicer.model_infos} == {"0.2"}
    finally:
        servicer.close()


def local_mirror(tmp_path: Path, override: dict | None = None) -> Path:
    """A mirror directory of our own: the shared mirror's files and SHA256SUMS, plus an override file."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in MIRROR.iterdir():
        shutil.copyfile(f, mirror / f.name)
    if override is not None:
        (mirror / provenance.MIRROR_OVERRIDE_FILE).write_text(json.dumps(override))
    return mirror


def crop_message(seed: int = 3):
    """An aligned crop as face-landmark sends it: a 448 px image, the face 224 px in its middle."""
    rng = np.random.default_rng(seed)
    crop = rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)
    return crop, face_landmark_pb2.AlignedCrop(image=rawimage.to_message(crop), face_width=224, face_height=224)


def test_a_mirror_override_sets_a_models_margin_and_models_are_cut_apart(tmp_path):
    """A mirror's faceanalysis-models.json gives the gender file a margin of its own: the pull
    records it, and face-attributes cuts each face twice (0.25 for gender, 0.4 for age and
    emotion), each model reading its own cut."""
    override = {"files": {"gender_model_weights.onnx": {
        "sha256": SUMS["gender_model_weights.onnx"], "description": "gender stand-in, tighter crop",
        "preprocessing": {"face_margin": 0.25}}}}
    mirror = local_mirror(tmp_path, override)
    target = tmp_path / "models"
    outcomes = {o.name: o for o in pull(target, service="face-attributes", mirror_location=str(mirror),
                                        progress=False)}
    gender = outcomes["gender_model_weights.onnx"].provenance
    assert gender.preprocessing["face_margin"] == 0.25
    assert gender.preprocessing_from == f"mirror {provenance.MIRROR_OVERRIDE_FILE}"
    assert gender.description == "gender stand-in, tighter crop"
    assert "faceanalysis-models.json" in gender.verified_by and "SHA256SUMS" in gender.verified_by
    assert outcomes["age_model_weights.onnx"].provenance.preprocessing["face_margin"] == 0.4
    assert provenance.read_record(target)[".deepface/weights/gender_model_weights.onnx"]["preprocessing"][
        "face_margin"] == 0.25
    # A later pull without the mirror keeps what the mirror said.
    again = {o.name: o for o in pull(target, service="face-attributes", progress=False)}
    assert all(o.skipped for o in again.values())
    assert again["gender_model_weights.onnx"].provenance.preprocessing["face_margin"] == 0.25

    from faceanalysis.face_attributes.server import FaceAttributesServicer

    servicer = FaceAttributesServicer(config.Settings(models_dir=target, cpu_limit=THREADS, face_margin=None))
    servicer.load()
    try:
        predictor = servicer.predictor
        assert predictor.margins == {"Age": 0.4, "Gender": 0.25, "Emotion": 0.4}
        assert predictor.groups == (0.25, 0.4)
        assert {m.task: m.parameters["face_margin"] for m in servicer.model_infos} == {
            "age": "0.4", "gender": "0.25", "emotion": "0.4"}
        crop, message = crop_message()
        batch = servicer._prepare([message, message])
        assert batch.shape == (2, 2, 224, 224, 3)
        (got, _) = servicer.batcher.submit(batch).result(timeout=60)
    finally:
        servicer.close()
    # Each answer is the one its model gives on the face cut at its own margin.
    reference = {m: Predictor(target, cpus=THREADS, face_margin=m) for m in (0.25, 0.4)}
    want = {m: p.predict(prepare_face(cut_face(crop, 224, 224, m))[None])[0] for m, p in reference.items()}
    # The batcher answers per face task -> value (Predictor.run).
    assert got["gender"] == pytest.approx(want[0.25].woman, abs=1e-5)
    assert got["age"][0] == pytest.approx(want[0.4].age, abs=1e-4)
    np.testing.assert_allclose(got["emotion"], want[0.4].emotions, atol=1e-5)


def test_a_mirror_override_with_a_wrong_hash_is_refused(tmp_path):
    override = {"files": {"age_model_weights.onnx": {"sha256": "ab" * 32, "preprocessing": {"face_margin": 0.3}}}}
    mirror = local_mirror(tmp_path, override)
    target = tmp_path / "models"
    with pytest.raises(PullError, match="sha256 mismatch") as err:
        pull(target, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert provenance.MIRROR_OVERRIDE_FILE in str(err.value)
    weights = target / ".deepface" / "weights"
    assert not (weights / "age_model_weights.onnx").exists()
    assert not list(weights.glob(".age*")), "no temporary file left behind"
    assert ".deepface/weights/age_model_weights.onnx" not in provenance.read_record(target)


def test_a_broken_override_file_fails_clearly(tmp_path):
    mirror = local_mirror(tmp_path)
    (mirror / provenance.MIRROR_OVERRIDE_FILE).write_text("{not json")
    with pytest.raises(PullError, match="faceanalysis-models.json is not valid"):
        pull(tmp_path / "models", service="face-attributes", mirror_location=str(mirror), progress=False)


def test_unknown_weights_get_the_official_preprocessing_with_a_warning(tmp_path, caplog):
    entry = models.manifest().get("age_model_weights.onnx")
    path = tmp_path / ".deepface" / "weights" / entry.name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"someone else's weights")
    with caplog.at_level(logging.WARNING, logger="faceanalysis.models.provenance"):
        found = provenance.resolve(tmp_path, path, entry)
    assert found.identity == models.UNKNOWN and found.face_margin == 0.0
    assert any("not a file the manifest" in r.getMessage() for r in caplog.records)


def test_a_file_changed_since_the_pull_is_identified_by_its_hash(models_dir, tmp_path, caplog):
    target = copy_models(models_dir, tmp_path / "models", with_record=True)
    age = target / ".deepface" / "weights" / "age_model_weights.onnx"
    assert provenance.resolve(target, age, models.manifest().get(age.name)).preprocessing_from.startswith(
        "manifest variant")  # from the record
    shutil.copyfile(target / ".deepface" / "weights" / "gender_model_weights.onnx", age)
    with caplog.at_level(logging.WARNING, logger="faceanalysis.models.provenance"):
        found = provenance.resolve(target, age, models.manifest().get(age.name))
    assert "changed since it was recorded" in caplog.text
    assert found.identity == models.UNKNOWN  # the gender stand-in is no known age file


def test_unsupported_preprocessing_keeps_the_service_not_ready(models_dir, tmp_path):
    target = copy_models(models_dir, tmp_path / "models", with_record=True)
    record = json.loads((target / provenance.RECORD_FILE).read_text())
    record["files"][".deepface/weights/facial_expression_model_weights.onnx"]["preprocessing"]["color_order"] = "RGB"
    (target / provenance.RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(models.UnsupportedPreprocessing, match="color_order"):
        Predictor(target, cpus=THREADS)


def test_face_landmark_names_its_files_hashes_and_settings(models_dir):
    from faceanalysis.face_landmark.landmarker import Landmarker

    landmarker = Landmarker(models_dir, threshold=0.8, crop_size=320, detection_max_side=800, detection_min_face=40)
    infos = {m.task: m for m in landmarker.model_infos}
    assert infos["face_detection"].sha256 == SUMS["face_detection_yunet_2023mar.onnx"]
    assert infos["face_detection"].parameters == {"detection_threshold": "0.8", "detection_max_side": "800",
                                                  "detection_min_face": "40"}
    assert infos["landmarks"].sha256 == models.manifest().get("shape_predictor_68_face_landmarks.dat").sha256
    assert infos["landmarks"].parameters == {"crop_size": "320"}

