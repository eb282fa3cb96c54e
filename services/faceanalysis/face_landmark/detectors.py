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

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        height, width = bgr.shape[:2]
        self.model.setInputSize((width, height))
        _, faces = self.model.detect(bgr)
        if faces is None:
            return []
        found = []
        for row in faces:
            x, y, w, h = (float(v) for v in row[:4])
            # YuNet: columns 4-5 are the eye on the picture's left, 6-7 the one on its right.
            found.append(Detection(x, y, w, h, float(row[-1]), (float(row[4]), float(row[5])),
                                   (float(row[6]), float(row[7]))))
        return found


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
