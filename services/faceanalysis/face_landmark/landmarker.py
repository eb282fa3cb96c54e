"""Detection + 68 landmarks + aligned crops for one image."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from faceanalysis import models
from faceanalysis.face_landmark import alignment, detectors, yunet
from faceanalysis.models import provenance
from faceanalysis.runtime import metrics

log = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
# iBUG 300-W indices of the eye contours: on the picture's left, then on its right.
IMAGE_LEFT_EYE = slice(36, 42)
IMAGE_RIGHT_EYE = slice(42, 48)


@dataclass
class FaceFound:
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None  # (68, 2) float; None when not asked for
    crop: np.ndarray | None  # None when not asked for
    face_width: float = 0.0
    face_height: float = 0.0


class Landmarker:
    def __init__(self, models_dir: Path, detector: str = "yunet", threshold: float = 0.9, crop_size: int = 448,
                 detection_max_side: int = 640, detection_min_face: int = 48, threads: int = 1):
        # detection_max_side and detection_min_face (see runtime/config.py) size YuNet's input;
        # the Haar and HOG detectors always search the full image. `threads`: YuNet's ONNX Runtime
        # pool, sized to the container's CPUs.
        # What a result names (ModelInfo): each file's sha256, hashed once here, and the settings
        # that shape the answers.
        detector_sha256, detector_parameters = "", {}
        if detector == "yunet":
            path = models.locate(models_dir, YUNET_FILE)
            session = yunet.YuNetModel(path, threads)  # one session, shared by every thread's detector
            self._make_detector = lambda: detectors.YuNetDetector(path, threshold, detection_max_side,
                                                                  detection_min_face, session)
            detector_sha256 = provenance.file_sha256(path)
            detector_parameters = {"detection_threshold": models.parameter(threshold),
                                   "detection_max_side": models.parameter(detection_max_side),
                                   "detection_min_face": models.parameter(detection_min_face)}
        elif detector == "haar":
            self._make_detector = detectors.HaarDetector
            detector_sha256 = provenance.file_sha256(Path(cv2.data.haarcascades) / detectors.HaarDetector.model_file)
            detector_parameters = {"opencv": cv2.__version__}
        elif detector == "hog":
            self._make_detector = detectors.HogDetector
            detector_parameters = {"dlib": dlib.__version__}  # built into dlib: no file to hash
        else:
            raise ValueError(f"unknown detector {detector!r}; choose yunet, haar or hog")
        # OpenCV's Haar cascade keeps per-call state: one detector per thread (YuNet's share a session).
        self._local = threading.local()
        start = time.perf_counter()
        first = self.detector
        metrics.MODEL_LOAD.labels(first.name).set(time.perf_counter() - start)
        start = time.perf_counter()
        predictor_path = models.locate(models_dir, PREDICTOR_FILE)
        self.predictor = dlib.shape_predictor(str(predictor_path))
        metrics.MODEL_LOAD.labels("dlib_68").set(time.perf_counter() - start)
        self.crop_size = crop_size
        self._model_infos = [
            models.ServedModel(first.name, "face_detection", first.model_file, detector_sha256, detector_parameters),
            # The aligned crop sent to face-attributes is cut around these landmarks' eyes.
            models.ServedModel("dlib_68", "landmarks", PREDICTOR_FILE, provenance.file_sha256(predictor_path),
                               {"crop_size": models.parameter(crop_size)}),
        ]

    @property
    def detector(self):
        if not hasattr(self._local, "detector"):
            self._local.detector = self._make_detector()
        return self._local.detector

    @property
    def model_infos(self) -> list[models.ServedModel]:
        """Each model that contributes to a result: file, sha256, and the settings that shape it."""
        return list(self._model_infos)

    def detect(self, bgr: np.ndarray, threshold: float | None = None,
               min_face: int | None = None) -> list[detectors.Detection]:
        with metrics.observe_inference(self.detector.name, 1):
            return self.detector.detect(bgr, threshold, min_face)

    def landmarks(self, gray: np.ndarray, det: detectors.Detection) -> np.ndarray:
        x, y, w, h = det.x, det.y, det.width, det.height
        if self.detector.name == "yunet":
            # dlib's predictor was trained on dlib's own (squarer, lower) boxes. Measured on the
            # shared photos (41 faces found by both): dlib's box centre sits 4.8 % of the height
            # lower, and is 1.10x as wide and 0.82x as tall as YuNet's. Feed it a box like that.
            cx, cy = x + w / 2, y + h / 2 + 0.048 * h
            w, h = w * 1.10, h * 0.82
            x, y = cx - w / 2, cy - h / 2
        rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
        shape = self.predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def analyze(self, bgr: np.ndarray, threshold: float | None = None, min_face: int | None = None,
                landmarks: bool = True, crops: bool = True, face_size: int | None = None) -> list[FaceFound]:
        """The faces in `bgr`. `threshold` and `min_face` are a request's own (None: the settings);
        `min_face` also drops faces whose box is smaller on its shorter side. Landmarks and crops
        are computed only when asked for, except that a crop the detector gave no eyes for is
        levelled by dlib's eye points, which are then computed but not returned. `face_size`
        shrinks crops further (see alignment.aligned_crop)."""
        height, width = bgr.shape[:2]
        kept = []
        for det in self.detect(bgr, threshold, min_face):
            # Boxes are clipped to the image; YuNet may report faces partly outside the frame.
            x0, y0 = max(0.0, det.x), max(0.0, det.y)
            x1, y1 = min(float(width), det.x + det.width), min(float(height), det.y + det.height)
            if x1 - x0 < 2 or y1 - y0 < 2 or (min_face and min(x1 - x0, y1 - y0) < min_face):
                continue
            kept.append((det, (x0, y0, x1 - x0, y1 - y0)))
        needs_points = [landmarks or (crops and det.image_left_eye is None) for det, _ in kept]
        points: list[np.ndarray | None] = [None] * len(kept)
        if landmarks or any(needs_points):
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            with metrics.observe_inference("dlib_68", sum(needs_points)):
                points = [self.landmarks(gray, det) if need else None
                          for (det, _), need in zip(kept, needs_points)]
        found = []
        for (det, box), pts in zip(kept, points):
            face = FaceFound(box, det.score, pts if landmarks else None, None)
            if crops:
                left = det.image_left_eye or tuple(pts[IMAGE_LEFT_EYE].mean(axis=0))
                right = det.image_right_eye or tuple(pts[IMAGE_RIGHT_EYE].mean(axis=0))
                face.crop, face.face_width, face.face_height = alignment.aligned_crop(
                    bgr, box, alignment.eye_angle(left, right), self.crop_size, face_size)
            found.append(face)
        found.sort(key=lambda f: f.box[0])
        return found
