"""Face detectors: OpenCV YuNet (default), OpenCV Haar cascade, dlib HOG.

Each returns boxes in the pixel space of the image it was given, with a score and, where the
detector provides them, eye centres (YuNet does; the others get eyes from the 68 landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np


@dataclass
class Detection:
    x: float
    y: float
    width: float
    height: float
    score: float
    # Eye centres in image coordinates: `image_left` is the eye on the left of the picture.
    image_left_eye: tuple[float, float] | None = None
    image_right_eye: tuple[float, float] | None = None


class YuNetDetector:
    name = "yunet"

    def __init__(self, model_path: Path, threshold: float):
        self.model_file = Path(model_path).name
        # Input size is set per image: the model has symbolic height and width.
        self.model = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), threshold, 0.3, 5000)

    # YuNet's anchors cover faces up to about 256 pixels, so larger faces (a close portrait in a
    # 20 MP photo) are missed at native size. We search a pyramid of halvings down to COARSE_SIDE;
    # a coarser level adds only faces too big for the finer one (>= LARGE_FACE there).
    LARGE_FACE = 256
    COARSE_SIDE = 640
    # One pass sees at most TILE x TILE pixels: YuNet's feature maps grow with its input (a
    # 40 MP frame took over 2 GB), so large levels are searched in overlapping tiles. The overlap
    # is LARGE_FACE, so every face this level can find lies whole inside some tile.
    TILE = 1280
    # No face fits in fewer rows or columns than this; thinner levels are skipped.
    MIN_SIDE = 32

    def _run(self, bgr: np.ndarray, scale: float, offset: tuple[int, int] = (0, 0)) -> list[Detection]:
        height, width = bgr.shape[:2]
        self.model.setInputSize((width, height))
        _, faces = self.model.detect(bgr)
        ox, oy = offset
        found = []
        for row in faces if faces is not None else ():
            v = [float(c) for c in row[:8]]
            v[0::2] = [(c + ox) / scale for c in v[0::2]]
            v[1::2] = [(c + oy) / scale for c in v[1::2]]
            v[2], v[3] = float(row[2]) / scale, float(row[3]) / scale  # sizes take no offset
            # Columns 4-5 are the eye on the picture's left, 6-7 the one on its right.
            found.append(Detection(v[0], v[1], v[2], v[3], float(row[-1]), (v[4], v[5]), (v[6], v[7])))
        return found

    def _level(self, bgr: np.ndarray, scale: float) -> list[Detection]:
        """Faces in one pyramid level, searched whole or in overlapping tiles."""
        height, width = bgr.shape[:2]
        if min(height, width) < self.MIN_SIDE:
            return []
        if max(height, width) <= self.TILE:
            return self._run(bgr, scale)
        step = self.TILE - self.LARGE_FACE
        found: list[Detection] = []
        for y0 in range(0, max(1, height - self.LARGE_FACE), step):
            for x0 in range(0, max(1, width - self.LARGE_FACE), step):
                tile = np.ascontiguousarray(bgr[y0:y0 + self.TILE, x0:x0 + self.TILE])
                th, tw = tile.shape[:2]
                if min(th, tw) < self.MIN_SIDE:
                    continue
                for det in self._run(tile, scale, (x0, y0)):
                    # A face cut by an inner tile edge lies whole in the neighbouring tile.
                    x, y = det.x * scale - x0, det.y * scale - y0
                    w, h = det.width * scale, det.height * scale
                    cut = ((x0 > 0 and x < 2) or (y0 > 0 and y < 2)
                           or (x0 + tw < width and x + w > tw - 2) or (y0 + th < height and y + h > th - 2))
                    if not cut and all(iou(det, f) < 0.3 for f in found):
                        found.append(det)
        return found

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        found = self._level(bgr, 1.0)
        longest = max(bgr.shape[:2])
        coarsest = self.COARSE_SIDE / longest
        scale = 1.0
        while scale > coarsest:
            scale = max(scale / 2, coarsest)
            if min(bgr.shape[:2]) * scale < self.MIN_SIDE:
                break
            small = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            for det in self._level(small, scale):
                # Size this face had one level finer: only faces that level could not see are new.
                finer = max(det.width, det.height) * min(1.0, 2 * scale)
                if finer >= self.LARGE_FACE and all(iou(det, f) < 0.3 for f in found):
                    found.append(det)
        return found


def iou(a: Detection, b: Detection) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


class HaarDetector:
    name = "haar"
    model_file = "haarcascade_frontalface_default.xml"

    def __init__(self):
        self.model = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / self.model_file))
        if self.model.empty():
            raise RuntimeError("OpenCV's Haar cascade file is missing from the opencv package")

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes, _, weights = self.model.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                         minSize=(24, 24), outputRejectLevels=True)
        # Haar gives level weights, not probabilities: squash them into (0, 1) for the contract.
        return [Detection(float(x), float(y), float(w), float(h), float(1 / (1 + np.exp(-float(s)))))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights) if len(boxes) else [])]


class HogDetector:
    name = "hog"
    model_file = "dlib_hog_frontal_face"

    def __init__(self):
        self.model = dlib.get_frontal_face_detector()

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rects, scores, _ = self.model.run(rgb, 1, 0.0)
        return [Detection(float(r.left()), float(r.top()), float(r.width()), float(r.height()),
                          float(1 / (1 + np.exp(-s))))
                for r, s in zip(rects, scores)]
