"""face-landmark's pipeline in-process with the real models."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from faceanalysis.face_landmark import alignment
from faceanalysis.face_landmark.detectors import Detection, YuNetDetector
from faceanalysis.face_landmark.landmarker import YUNET_FILE, Landmarker
from tests.support import IMAGES, image


@pytest.fixture(scope="module")
def yunet(models_dir):
    return YuNetDetector(models_dir / YUNET_FILE, 0.9)


def reference_faces():
    """Boxes and 68 points from dlib's own model, in shared/images/dlib/training_with_face_landmarks.xml."""
    root = ET.parse(IMAGES / "dlib" / "training_with_face_landmarks.xml").getroot()
    for img in root.iter("image"):
        boxes = []
        for box in img.iter("box"):
            pts = np.array([(float(p.get("x")), float(p.get("y"))) for p in box.iter("part")])
            boxes.append(((int(box.get("left")), int(box.get("top")), int(box.get("width")), int(box.get("height"))), pts))
        yield img.get("file"), boxes


def errors_against_reference(landmarker: Landmarker) -> list[float | None]:
    """Per reference face: mean point error / inter-ocular distance of the closest face we found."""
    out = []
    for name, refs in reference_faces():
        found = landmarker.analyze(cv2.imread(str(image(f"dlib/{name}"))))
        for _, ref in refs:
            ocular = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
            errors = [np.linalg.norm(f.landmarks - ref, axis=1).mean() / ocular for f in found]
            out.append(min(errors) if errors else None)
    return out


def test_predictor_reproduces_reference_on_its_boxes(models_dir):
    """Given the reference boxes, our predictor call gives dlib's reference points."""
    landmarker = Landmarker(models_dir, detector="hog")
    errors = []
    for name, refs in reference_faces():
        gray = cv2.cvtColor(cv2.imread(str(image(f"dlib/{name}"))), cv2.COLOR_BGR2GRAY)
        for (x, y, w, h), ref in refs:
            pts = landmarker.landmarks(gray, Detection(x, y, w, h, 1.0))
            ocular = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
            errors.append(np.linalg.norm(pts - ref, axis=1).mean() / ocular)
    assert len(errors) == 18
    assert np.median(errors) < 0.05


def test_hog_pipeline_matches_reference(models_dir):
    errors = errors_against_reference(Landmarker(models_dir, detector="hog"))
    assert all(e is not None and e < 0.15 for e in errors), errors
    assert np.mean(errors) < 0.05


def test_yunet_pipeline_matches_reference_where_it_finds_faces(models_dir):
    # YuNet at its 0.9 threshold misses some of these 37-pixel VOC faces; the ones it finds
    # (error < 0.3 means the same face) must carry points as good as dlib's own pipeline.
    errors = [e for e in errors_against_reference(Landmarker(models_dir, detector="yunet")) if e is not None and e < 0.3]
    assert len(errors) >= 8
    assert np.mean(errors) < 0.05


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_yunet_finds_faces_at_any_size(yunet, factor):
    """Large faces (a close portrait in a big photo) are found as well as small ones."""
    bgr = cv2.imread(str(image("misc/t1.jpg")))
    scaled = cv2.resize(bgr, None, fx=factor, fy=factor)
    assert len(yunet.detect(scaled)) == 6


def test_yunet_large_portrait(yunet):
    assert len(yunet.detect(cv2.imread(str(image("deepface/couple.jpg"))))) == 2
    faces = yunet.detect(cv2.imread(str(image("face_recognition/test_obama_and_biden.jpg"))))
    # The two men fill the top half; a girl low at the right edge sits at YuNet's threshold
    # (BORDERLINE in tests/integration/test_known_photos.py) and may come too.
    assert sum(f.y + f.height < 714 for f in faces) == 2 and len(faces) <= 3


@pytest.mark.parametrize("detector", ["haar", "hog"])
def test_other_detectors_find_obama(models_dir, detector):
    found = Landmarker(models_dir, detector=detector).analyze(cv2.imread(str(image("face_recognition/obama.jpg"))))
    assert len(found) == 1 and found[0].landmarks.shape == (68, 2)
    assert 0 < found[0].score <= 1


def test_aligned_crop_levels_the_eyes(models_dir):
    """A face rotated by 20 degrees comes back upright in its crop."""
    bgr = cv2.imread(str(image("face_recognition/obama.jpg")))
    h, w = bgr.shape[:2]
    rotated = cv2.warpAffine(bgr, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
    landmarker = Landmarker(models_dir)
    (face,) = landmarker.analyze(rotated)
    (again,) = landmarker.analyze(face.crop)
    left, right = again.landmarks[36:42].mean(0), again.landmarks[42:48].mean(0)
    tilt = np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))
    assert abs(tilt) < 5
    assert max(face.crop.shape[:2]) <= 512


def full_size_crop(bgr, box, angle, size):
    """The crop by the plain route: turned at full size, then averaged down to `size`."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    out = (int(round(2 * w)), int(round(2 * h)))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (out[0] / 2 - cx, out[1] / 2 - cy)
    turned = cv2.warpAffine(bgr, matrix, out, flags=cv2.INTER_LINEAR)
    return cv2.resize(turned, size, interpolation=cv2.INTER_AREA)


# obama.jpg's face box is 329 px tall: shrunk 2.06x, 3.3x and 8.2x (2x is the least that takes the
# shrunk-region path; 200 px, 1.6x, would not).
@pytest.mark.parametrize("face_size", [160, 100, 40])
@pytest.mark.parametrize("where", ["middle", "corner"])
def test_shrunk_crop_is_the_full_size_crop(models_dir, face_size, where):
    """A crop shrunk 2x or more is cut from a shrunk copy of its region: the same picture as
    turning at full size and shrinking afterwards, including the black beyond a corner."""
    bgr = cv2.imread(str(image("face_recognition/obama.jpg")))
    (face,) = Landmarker(models_dir).analyze(bgr, crops=False)
    x, y, w, h = face.box
    box = (x, y, w, h) if where == "middle" else (-w / 3, -h / 4, w, h)  # a face cut by the corner
    crop, face_w, face_h = alignment.aligned_crop(bgr, box, 17.0, 448, face_size)
    assert max(face_w, face_h) == pytest.approx(face_size, abs=1)
    reference = full_size_crop(bgr, box, 17.0, (crop.shape[1], crop.shape[0]))
    assert int(1 / (face_size / max(w, h))) >= 2  # the path under test, not the full-size one
    # Each path blurs a little differently: about 1 grey level apart at 2x, 3 at 8x (a 58 px crop).
    assert np.abs(crop.astype(int) - reference).mean() < 3.5
    black = reference.max(axis=2) == 0
    if where == "corner":
        assert black.mean() > 0.2 and np.abs(crop[black].astype(int)).mean() < 8
