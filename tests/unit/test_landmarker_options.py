"""face-landmark under a request's options, in-process with the real models: dlib runs only for
the points asked for or the eyes a crop must be levelled by, crops only when asked for, and a
request's threshold and min_face apply to that call alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceanalysis.face_landmark.landmarker import Landmarker
from tests.support import image

DOWNSCALED = "misc/t1.jpg"  # 1280 px wide: YuNet's first pass runs at 0.5, so it gives no eyes
FULL_SIZE = "deepface/selfie-many-people.jpg"  # 600x604: searched at full resolution, eyes from YuNet


@pytest.fixture(scope="module")
def landmarker(models_dir):
    return Landmarker(models_dir)


@pytest.fixture
def dlib_calls(landmarker, monkeypatch):
    """The faces dlib's shape predictor is run on, call by call."""
    calls = []
    original = landmarker.landmarks

    def counted(gray, det):
        calls.append(det)
        return original(gray, det)

    monkeypatch.setattr(landmarker, "landmarks", counted)
    return calls


def photo(name: str) -> np.ndarray:
    return cv2.imread(str(image(name)))


def test_boxes_only_never_runs_dlib(landmarker, dlib_calls):
    full = landmarker.analyze(photo(DOWNSCALED))
    dlib_calls.clear()
    boxes = landmarker.analyze(photo(DOWNSCALED), landmarks=False, crops=False)
    assert dlib_calls == []
    assert [f.box for f in boxes] == [f.box for f in full] and len(boxes) == 6
    assert all(f.landmarks is None and f.crop is None for f in boxes)


@pytest.mark.parametrize("name,dlib_runs", [(DOWNSCALED, True), (FULL_SIZE, False)])
def test_crops_without_landmarks_are_levelled_as_before(landmarker, dlib_calls, name, dlib_runs):
    full = landmarker.analyze(photo(name))
    dlib_calls.clear()
    crops = landmarker.analyze(photo(name), landmarks=False, crops=True)
    # dlib runs only where YuNet gave no eyes (a face from the downscaled pass, not from a re-check
    # at full resolution); its points are not returned.
    assert all(det.image_left_eye is None for det in dlib_calls)
    assert (0 < len(dlib_calls) <= len(crops)) if dlib_runs else not dlib_calls
    assert all(f.landmarks is None for f in crops)
    assert len(crops) == len(full)
    for a, b in zip(crops, full):
        assert np.array_equal(a.crop, b.crop) and (a.face_width, a.face_height) == (b.face_width, b.face_height)


def test_landmarks_without_crops(landmarker):
    (face, *_) = landmarker.analyze(photo(FULL_SIZE), landmarks=True, crops=False)
    assert face.landmarks.shape == (68, 2) and face.crop is None


def test_min_face_drops_smaller_faces_and_threshold_filters(landmarker):
    every = landmarker.analyze(photo(FULL_SIZE), crops=False)
    large = landmarker.analyze(photo(FULL_SIZE), min_face=90, crops=False)
    assert [f.box for f in large] == [f.box for f in every if min(f.box[2:]) >= 90] and len(large) < len(every)
    strict = landmarker.analyze(photo(FULL_SIZE), threshold=0.93, crops=False)
    assert [f.box for f in strict] == [f.box for f in every if f.score >= 0.93] and len(strict) < len(every)


def test_a_request_threshold_does_not_outlive_its_call(landmarker):
    before = [f.box for f in landmarker.analyze(photo(FULL_SIZE), crops=False)]
    assert len(landmarker.analyze(photo(FULL_SIZE), threshold=0.5, crops=False)) > len(before)
    assert [f.box for f in landmarker.analyze(photo(FULL_SIZE), crops=False)] == before
