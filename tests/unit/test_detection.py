"""YuNet on a downscaled copy: small faces in large frames, large faces, the two settings, and the
coordinates (original-image pixels) that boxes and landmarks come back in. Real model, real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceanalysis.face_landmark.detectors import Detection, YuNetDetector, iou
from faceanalysis.face_landmark.landmarker import YUNET_FILE, Landmarker
from faceanalysis.face_landmark.server import FaceLandmarkServicer
from faceanalysis.runtime import config, cpu
from tests.support import image

CANVAS = (3000, 4000)  # a 12 MP frame: the default first pass sees it at 0.32


def detector(models_dir, **settings) -> YuNetDetector:
    return YuNetDetector(models_dir / YUNET_FILE, 0.9, **settings)


@pytest.fixture(scope="module")
def small_obama(models_dir):
    """obama_small.jpg and YuNet's box of its face, found at full resolution."""
    bgr = cv2.imread(str(image("face_recognition/obama_small.jpg")))
    (face,) = detector(models_dir).detect(bgr)
    return bgr, face


def paste(photo: np.ndarray, face: Detection, width: float, at: tuple[int, int]) -> tuple[np.ndarray, Detection]:
    """A grey 4000x3000 canvas holding `photo` shrunk so that `face` is `width` px wide, its top-left
    corner at `at`; and where that face's box is on the canvas."""
    k = width / face.width
    small = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    canvas = np.full((*CANVAS, 3), (96, 112, 128), np.uint8)
    x0, y0 = at
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return canvas, Detection(x0 + face.x * k, y0 + face.y * k, face.width * k, face.height * k, 1.0)


# Corners, middle and an odd spot: a face at any position of YuNet's grid.
PLACES = [(40, 40), (1987, 1433), (3840, 2880), (1234, 2222), (3001, 517)]


@pytest.mark.parametrize("at", PLACES)
def test_small_face_in_large_frame_found_in_place(models_dir, small_obama, at):
    """A face the default detection_min_face (48 px) must find, in a 12 MP frame that YuNet
    first sees at 14/48 = 0.29, the scale detection_min_face asks for (the face is 15 px there, too
    small for YuNet to be sure of): found, with its box in the canvas's own pixels."""
    photo, face = small_obama
    canvas, expected = paste(photo, face, 50, at)
    yunet = detector(models_dir)
    assert yunet.working_scale(*CANVAS) == pytest.approx(14 / 48)
    (found,) = yunet.detect(canvas)
    assert iou(found, expected) > 0.6, (found, expected)
    assert abs(found.x + found.width / 2 - (expected.x + expected.width / 2)) < 0.15 * expected.width


def test_small_face_landmarks_and_crop_in_original_pixels(models_dir, small_obama):
    """Only detection is downscaled: the 68 points, box and crop come from the full-size canvas."""
    photo, face = small_obama
    canvas, expected = paste(photo, face, 60, (2500, 1800))
    (found,) = Landmarker(models_dir).analyze(canvas)
    x, y, w, h = found.box
    assert iou(Detection(x, y, w, h, 1.0), expected) > 0.6
    # The eyes (points 36-47) lie in the upper half of the box, the chin (8) near its bottom.
    eyes = found.landmarks[36:48]
    assert np.all((eyes[:, 0] > x) & (eyes[:, 0] < x + w) & (eyes[:, 1] > y) & (eyes[:, 1] < y + h * 0.6))
    assert y + 0.7 * h < found.landmarks[8, 1] < y + 1.3 * h
    assert found.face_width == pytest.approx(w, rel=0.3)


def test_faces_below_the_limit_are_not_promised(models_dir, small_obama):
    """A 30 px face is under detection_min_face: at the default first pass (14/48: 8.8 px there) YuNet
    cannot see it, and no full-resolution search is made for it."""
    photo, face = small_obama
    canvas, expected = paste(photo, face, 30, (1987, 1433))
    assert detector(models_dir).detect(canvas) == []
    # Asking for faces that small makes the first pass fine enough (14/24: 0.58, in tiles).
    (found,) = detector(models_dir, min_face=24).detect(canvas)
    assert iou(found, expected) > 0.5


def test_min_face_setting_decides(models_dir, small_obama):
    """detection_min_face is honoured: with a 640 px first pass a 44 px face is 7 px to YuNet and
    lost; a min_face of 44 (or more pixels through max_side) brings it back."""
    photo, face = small_obama
    canvas, expected = paste(photo, face, 44, (1234, 2222))
    assert detector(models_dir, max_side=640, min_face=400).detect(canvas) == []
    for settings in ({"max_side": 640, "min_face": 44}, {"max_side": 4000, "min_face": 400}):
        (found,) = detector(models_dir, **settings).detect(canvas)
        assert iou(found, expected) > 0.5, settings


def test_working_scale():
    yunet = object.__new__(YuNetDetector)  # no model needed for the arithmetic
    yunet.max_side, yunet.min_face = 1280, 48
    assert yunet.working_scale(3000, 4000) == pytest.approx(0.32)      # max_side decides
    assert yunet.working_scale(4000, 6000) == pytest.approx(14 / 48)   # min_face needs more
    assert yunet.working_scale(886, 1280) == 1.0                       # never enlarged
    assert yunet.working_scale(100, 5000) == pytest.approx(0.33)       # a strip keeps 33 rows
    yunet.min_face = 10
    assert yunet.working_scale(3000, 4000) == 1.0                      # full resolution


def test_face_filling_a_large_frame(models_dir):
    """A portrait whose face is 70 % of a 3000 px frame (2100 px tall, far beyond YuNet's 256 px
    anchors) is found by the pyramid, in the frame's pixels."""
    bgr = cv2.imread(str(image("face_recognition/obama.jpg")))
    (face,) = detector(models_dir).detect(bgr)
    side = face.height / 0.7
    x0, y0 = int(max(0, face.x + face.width / 2 - side * 0.4)), int(max(0, face.y + face.height / 2 - side / 2))
    crop = bgr[y0:int(face.y + face.height / 2 + side / 2), x0:int(face.x + face.width / 2 + side * 0.4)]
    k = 3000 / crop.shape[0]
    big = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    expected = Detection((face.x - x0) * k, (face.y - y0) * k, face.width * k, face.height * k, 1.0)
    assert expected.height > 0.6 * big.shape[0]
    (found,) = detector(models_dir).detect(big)
    assert iou(found, expected) > 0.7


def test_downscaled_boxes_agree_with_full_resolution(models_dir):
    """Boxes from the default 640 px pass match full-resolution ones on the big shared photos."""
    full, default = detector(models_dir, max_side=100_000, min_face=1), detector(models_dir)
    overlaps = []
    for name in ["deepface/couple.jpg", "dlib/bald_guys.jpg", "face_recognition/test_obama_and_biden.jpg",
                 "deepface/img4.jpg", "face_recognition/biden.jpg"]:
        bgr = cv2.imread(str(image(name)))
        assert default.working_scale(*bgr.shape[:2]) < 0.7
        found = default.detect(bgr)
        for ref in full.detect(bgr):
            overlaps.append(max((iou(ref, f) for f in found), default=0.0))
    assert len(overlaps) >= 30
    assert min(overlaps) > 0.75 and np.median(overlaps) > 0.88, overlaps


def test_settings_defaults_match_the_code():
    """The service passes the settings; direct users of Landmarker get the same defaults."""
    import inspect

    fields = config.Settings.model_fields
    params = inspect.signature(Landmarker).parameters
    assert params["detection_max_side"].default == fields["detection_max_side"].default
    assert params["detection_min_face"].default == fields["detection_min_face"].default


@pytest.mark.parametrize("name,value", [("DETECTION_MAX_SIDE", "100"), ("DETECTION_MAX_SIDE", "big"),
                                        ("DETECTION_MAX_SIDE", "100000"), ("DETECTION_MIN_FACE", "0"),
                                        ("DETECTION_MIN_FACE", "-5"), ("DETECTION_MIN_FACE", "5000")])
def test_invalid_detection_settings_refused(monkeypatch, name, value):
    monkeypatch.setenv(f"FACEANALYSIS_{name}", value)
    with pytest.raises(SystemExit) as err:
        config.load()
    assert f"FACEANALYSIS_{name}" in str(err.value)


def test_service_load_passes_settings_and_sizes_opencv(models_dir, monkeypatch):
    monkeypatch.setenv("FACEANALYSIS_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("FACEANALYSIS_DETECTION_MAX_SIDE", "960")
    monkeypatch.setenv("FACEANALYSIS_DETECTION_MIN_FACE", "64")
    monkeypatch.setenv("FACEANALYSIS_CPU_LIMIT", "1")
    before = cv2.getNumThreads()
    try:
        servicer = FaceLandmarkServicer(config.load())
        servicer.load()
        assert cv2.getNumThreads() == cpu.available_cpus(1.0) == 1
        yunet = servicer.landmarker.detector
        assert (yunet.max_side, yunet.min_face) == (960, 64)
    finally:
        cv2.setNumThreads(before)


def test_pyramid_overrides_a_distorted_box_for_a_face_too_large(models_dir):
    """At a 1600 px pass couple.jpg's man (600 px face, 420 px there: beyond the anchors) comes
    back from YuNet squashed to 417x758; the coarser level's box, which sees him whole, wins."""
    bgr = cv2.imread(str(image("deepface/couple.jpg")))
    reference = detector(models_dir, max_side=640, min_face=400).detect(bgr)  # both faces < 256 px there
    found = detector(models_dir, max_side=1600).detect(bgr)
    assert len(found) == len(reference) == 2
    assert all(max(iou(r, f) for f in found) > 0.8 for r in reference)


@pytest.mark.parametrize("shape", [(35, 19400), (19400, 35), (68, 5000), (40, 5000), (32, 151), (151, 32)])
def test_blank_strips_have_no_faces(models_dir, shape):
    """Thin inputs: YuNet answers a 32 px high or wide input with rubbish scored 1.0, and the
    working scale can shrink a strip to that (19400x35 at 0.91). None of it may come out."""
    blank = np.full((*shape, 3), 100, np.uint8)
    for settings in ({}, {"max_side": 320, "min_face": 4096}, {"max_side": 100_000, "min_face": 1}):
        assert detector(models_dir, **settings).detect(blank) == [], settings
