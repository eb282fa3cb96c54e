"""YuNet on ONNX Runtime gives what OpenCV's FaceDetectorYN gives: the same faces, boxes, points
and scores on every shared photo, at the sizes and thresholds the detector uses. FaceDetectorYN is
OpenCV's own reference for this model; the service only stopped running it for speed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceanalysis.face_landmark.landmarker import YUNET_FILE
from faceanalysis.face_landmark.yunet import YuNetModel
from faceanalysis.runtime import imagecodec
from tests.support import IMAGES

PHOTOS = sorted(p for p in IMAGES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
LIMITS = imagecodec.Limits(max_bytes=50 << 20, max_pixels=100_000_000, min_side=16)


@pytest.fixture(scope="module")
def model(models_dir):
    return YuNetModel(models_dir / YUNET_FILE, threads=1)


def opencv_faces(models_dir, bgr: np.ndarray, threshold: float) -> np.ndarray:
    reference = cv2.FaceDetectorYN.create(str(models_dir / YUNET_FILE), "", (bgr.shape[1], bgr.shape[0]),
                                          threshold, 0.3, 5000)
    _, faces = reference.detect(bgr)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def by_score(rows: np.ndarray) -> np.ndarray:
    return rows[np.argsort(-rows[:, 14], kind="stable")]


def test_photos_are_there():
    assert len(PHOTOS) >= 30, f"expected the shared photos under {IMAGES}"


@pytest.mark.parametrize("longest_side", [640, 1280])
@pytest.mark.parametrize("threshold", [0.3, 0.9])
def test_same_faces_as_opencv(models_dir, model, threshold, longest_side):
    faces = 0
    for photo in PHOTOS:
        _, bgr = imagecodec.decode(photo.read_bytes(), LIMITS)
        scale = min(1.0, longest_side / max(bgr.shape[:2]))
        # An odd-sized image checks the padding to a multiple of 32 as well.
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        expected, got = opencv_faces(models_dir, bgr, threshold), model.detect(bgr, threshold)
        assert got.shape == expected.shape, f"{photo.name}: {len(got)} faces, OpenCV found {len(expected)}"
        # Boxes and points to a hundredth of a pixel, scores to 1e-4.
        np.testing.assert_allclose(by_score(got)[:, :14], by_score(expected)[:, :14], atol=0.01,
                                   err_msg=photo.name)
        np.testing.assert_allclose(by_score(got)[:, 14], by_score(expected)[:, 14], atol=1e-4, err_msg=photo.name)
        faces += len(got)
    assert faces >= 40  # the photos hold dozens of faces: the comparison compared something


def test_a_strided_view_is_read_as_its_pixels(model):
    """Tiles are views into the level, not copies: the blob must come from the view's own pixels."""
    _, bgr = imagecodec.decode((IMAGES / "face_recognition/obama.jpg").read_bytes(), LIMITS)
    view = bgr[100:740, 50:690]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(model.detect(view, 0.9), model.detect(np.ascontiguousarray(view), 0.9))


def test_blank_image_has_no_faces(model):
    assert model.detect(np.zeros((480, 640, 3), np.uint8), 0.3).shape == (0, 15)


def test_another_model_is_refused_by_name(models_dir, tmp_path):
    emotion = next(models_dir.rglob("facial_expression_model_weights.onnx"))
    with pytest.raises(ValueError, match="is not a YuNet 2023mar model"):
        YuNetModel(emotion, threads=1)
