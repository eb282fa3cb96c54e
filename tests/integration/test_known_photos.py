"""Real photos through the whole stack: counts, landmarks, genders and expressions that are known."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.support import FED_PREPROCESSING as FED, image

FACE_COUNTS = {
    "face_recognition/obama.jpg": 1,
    "face_recognition/biden.jpg": 1,
    "face_recognition/two_people.jpg": 2,
    "face_recognition/test_obama_and_biden.jpg": 2,
    "face_recognition/test_kit_with_rose.jpg": 2,
    "misc/astronaut.png": 1,
    "misc/t1.jpg": 6,
    "deepface/couple.jpg": 2,
    "dlib/dogs.jpg": 0,
}
# Real faces beyond the count above that the detector may or may not report: in
# test_obama_and_biden.jpg a girl at the right edge, looking down, whom YuNet scores right at its
# 0.9 threshold (0.898 on the full 2000 px photo, 0.90-0.92 at every scale from 0.3 to 0.9 and
# in a full-size window around her), so a downscaled detection pass reports her.
BORDERLINE = {"face_recognition/test_obama_and_biden.jpg": 1}
W, M = common_pb2.GENDER_WOMAN, common_pb2.GENDER_MAN
# Genders by face, left to right (shared/images/README.md).
GENDERS = {
    "face_recognition/obama.jpg": [M],
    "face_recognition/biden.jpg": [M],
    "misc/Tom_Hanks_54745.png": [M],
    "misc/astronaut.png": [W],
    "deepface/img1.jpg": [W],
    "deepface/img4.jpg": [W],
    "face_recognition/train_rose_leslie_img1.jpg": [W],
    "deepface/couple.jpg": [W, M],
    "face_recognition/test_kit_with_rose.jpg": [W, M],
    "misc/t1.jpg": [W, W, M, M, M, W],
}
EMOTIONS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def analyze(api, relative: str, **options) -> common_pb2.AnalysisResult:
    request = image_input_pb2.AnalyzeImageRequest(image=image(relative).read_bytes(),
                                                  options=common_pb2.AnalysisOptions(**options))
    return api.AnalyzeImage(request, timeout=120).result


@pytest.fixture(scope="module")
def analyzed(api):
    return {name: analyze(api, name, skip_cache=True) for name in sorted(set(FACE_COUNTS) | set(GENDERS))}


@pytest.mark.parametrize("name,count", sorted(FACE_COUNTS.items()))
def test_face_count(analyzed, name, count):
    assert count <= len(analyzed[name].faces) <= count + BORDERLINE.get(name, 0)


def test_genders_of_known_faces(analyzed):
    # The stand-in SSR-Net gender model is right on 16 of these 17 faces (t1's fourth face is the
    # known miss, shared/models/README.md). Allow that one, and no other.
    wrong = []
    for name, expected in GENDERS.items():
        got = [f.gender.label for f in analyzed[name].faces]
        assert len(got) == len(expected), name
        wrong += [(name, i) for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert len(wrong) <= 1, wrong
    assert set(wrong) <= {("misc/t1.jpg", 3)}, wrong


def test_results_name_each_models_sha256_and_settings(analyzed, models_dir):
    """No FACEANALYSIS_FACE_MARGIN is set: the stand-ins run at their own margin (0.4, from their
    metadata), and every result says so, with each file's sha256."""
    from faceanalysis.models.pull import sha256_of

    installed = {path.name: sha256_of(path) for path in models_dir.rglob("*") if path.is_file()}
    result = analyzed["face_recognition/obama.jpg"]
    by_task = {m.task: m for m in result.models}
    assert set(by_task) == {"face_detection", "landmarks", "age", "gender", "emotion"}
    for model in result.models:
        assert model.sha256 == installed[model.file], model.name
    for task in ("age", "gender", "emotion"):
        assert dict(by_task[task].parameters) == {"face_margin": "0.4", **FED, "precision": "fp32", "face_size": "160"}, task
    assert dict(by_task["face_detection"].parameters) == {
        "detection_threshold": "0.9", "detection_max_side": "640", "detection_min_face": "48"}
    # Crops shrunk to the face size the stand-ins' 0.4 margin needs: 224 / 1.4.
    assert dict(by_task["landmarks"].parameters) == {"crop_size": "448", "face_size": "160"}


def test_obama_smiles(analyzed):
    (face,) = analyzed["face_recognition/obama.jpg"].faces
    assert face.emotion.dominant == "happy"


def test_result_contract(analyzed):
    for name, result in analyzed.items():
        width, height = Image.open(image(name)).size
        assert (result.image.width, result.image.height) == (width, height)
        assert len(result.image.sha256) == 64
        assert result.stored and len(result.analysis_id) == 32
        assert {m.task for m in result.models} >= {"face_detection", "landmarks", "age", "gender", "emotion"} or not result.faces
        assert {t.stage for t in result.timings} >= {"decode", "face_landmark", "total"}
        xs = [f.box.x for f in result.faces]
        assert xs == sorted(xs), "faces are ordered by box x"
        for face in result.faces:
            b = face.box
            assert 0 <= b.x and 0 <= b.y and b.x + b.width <= width and b.y + b.height <= height
            assert 0 <= face.detection_score <= 1
            assert len(face.landmarks) == 68
            # Landmarks sit on the face: nearly all inside the box grown by a quarter.
            inside = sum(b.x - b.width / 4 <= p.x <= b.x + 1.25 * b.width and
                         b.y - b.height / 4 <= p.y <= b.y + 1.25 * b.height for p in face.landmarks)
            assert inside >= 60, (name, inside)
            assert 0 <= face.gender.confidence <= 1
            assert face.age.low <= face.age.years <= face.age.high and 0 < face.age.years < 101
            assert set(face.emotion.scores) == EMOTIONS
            assert all(0 <= v <= 1 for v in face.emotion.scores.values())
            assert sum(face.emotion.scores.values()) == pytest.approx(1, abs=1e-4)
            assert face.emotion.dominant == max(face.emotion.scores, key=face.emotion.scores.get)


def test_exif_orientation_is_honoured(api):
    """A sideways-stored photo with an EXIF rotation is analysed upright, in upright coordinates."""
    upright = Image.open(image("face_recognition/obama.jpg"))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes; EXIF says "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    request = image_input_pb2.AnalyzeImageRequest(image=buf.getvalue(),
                                                  options=common_pb2.AnalysisOptions(no_store=True))
    result = api.AnalyzeImage(request, timeout=60).result
    assert (result.image.width, result.image.height) == upright.size
    assert len(result.faces) == 1
    reference = analyze(api, "face_recognition/obama.jpg", no_store=True).faces[0].box
    assert abs(result.faces[0].box.x - reference.x) < 15 and abs(result.faces[0].box.y - reference.y) < 15


def test_cache_answers_identical_image(api):
    first = analyze(api, "face_recognition/biden.jpg")
    second = analyze(api, "face_recognition/biden.jpg")
    assert second.cached and second.stored
    assert second.analysis_id == first.analysis_id
    fresh = analyze(api, "face_recognition/biden.jpg", skip_cache=True)
    assert not fresh.cached and fresh.analysis_id != first.analysis_id
