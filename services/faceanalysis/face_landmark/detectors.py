"""Face detectors: YuNet on ONNX Runtime (default), OpenCV Haar cascade, dlib HOG.

Each returns boxes in the pixel space of the image it was given, with a score and, where the
detector provides them, eye centres (YuNet does; the others get eyes from the 68 landmarks).
`detect(bgr, threshold, min_face)` takes a request's own threshold and smallest face (None: the
detector's settings); YuNet sizes its search by `min_face`, the others search the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from faceanalysis.face_landmark.yunet import YuNetModel


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
    """YuNet at the cost a photo needs: one pass over a downscaled copy sized for the smallest face
    that must be found, a finer look only where that pass saw a face too small to be sure of, and a
    coarser pyramid for faces too large for YuNet's anchors. Boxes come back in the coordinates of
    the image given (only detection is downscaled; landmarks and crops use the full image)."""

    name = "yunet"

    # YuNet's anchors cover faces up to about 256 pixels, so larger faces (a close portrait in a
    # 20 MP photo) are missed at the working scale. We search a pyramid of halvings of it down to
    # COARSE_SIDE; a coarser level adds only faces too big for the finer one (>= LARGE_FACE there).
    LARGE_FACE = 256
    COARSE_SIDE = 640
    # YuNet still boxes faces up to about 448 px well (17 portraits scaled so the face was 448 px
    # tall: IoU with their 160 px box >= 0.82), worse beyond (512 px: median 0.87, min 0.76; 640 px:
    # scores under 0.9). A coarser level's box replaces a finer one this large.
    DISTORTED_FACE = 448
    # One pass sees at most TILE x TILE pixels: YuNet's feature maps grow with its input (a
    # 40 MP frame took over 2 GB), so large levels are searched in overlapping tiles. The overlap
    # is LARGE_FACE, so every face this level can find lies whole inside some tile.
    TILE = 1280
    # YuNet is given no fewer rows or columns than this: no face fits in fewer, and on inputs 32 px
    # (or less) high or wide it returns rubbish scored 1.0 (boxes thousands of pixels outside a
    # blank 32x151 input). Thinner images, levels and tiles are skipped.
    MIN_SIDE = 33
    # How small a face YuNet can see, measured on 17 single-face photos shrunk onto a grey canvas
    # (box width at YuNet's input): at the usual 0.9 threshold it finds all of them at 28 px,
    # 15 at 24 px, 4 at 16 px and none at 14 px; but at 12 px every one still scores >= 0.55.
    # So the first pass keeps candidates down to PROBE_THRESHOLD and re-checks them on the
    # full-resolution pixels. With that, detect() found the 17 faces pasted 16 times each into a
    # 4000x3000 frame (working scale 0.32) 272/272 times at 14 px wide there, 271/272 at 12 px,
    # 215/272 at 10 px: a face PROBE_FACE px wide at the working scale is found.
    PROBE_FACE = 14
    PROBE_THRESHOLD = 0.3
    # Which candidates are worth a re-check: those narrower than RECHECK_BELOW at the working
    # scale (wider ones were big enough for YuNet to judge), and near misses (within NEAR_MISS of
    # the threshold) of any size: downscaling moves YuNet's scores by a few hundredths either way
    # (VOC faces upscaled 4x: 0.913 at full size, 0.876 at 0.64), so a face that full resolution
    # passes can fall just short. A re-check looks at a window three boxes wide around the
    # candidate at full resolution, or shrunk so that the face is RECHECK_FACE px wide (well inside
    # the anchors' reach), and has the last word. Windows are small: on the shared photos a re-check
    # is rare (0-7 per photo), on 4000x3000 group shots of 100+ small faces about one per face.
    RECHECK_BELOW = 56
    NEAR_MISS = 0.1
    RECHECK_FACE = 160
    # Detections overlapping an earlier one by this much are the same face.
    SAME_FACE_IOU = 0.3

    def __init__(self, model_path: Path, threshold: float, max_side: int = 640, min_face: int = 48,
                 model: YuNetModel | None = None, threads: int = 1):
        """`model`: a YuNetModel on `model_path` to share (it is thread-safe); None builds one."""
        self.model_file = Path(model_path).name
        self.threshold = threshold
        self.max_side = max_side
        self.min_face = min_face
        self.model = model or YuNetModel(Path(model_path), threads)

    def working_scale(self, height: int, width: int, min_face: int | None = None) -> float:
        """Scale of the first pass: the longest side down to `max_side`, unless `min_face` (default:
        the detector's) needs more pixels (a face that small must still be PROBE_FACE px wide) or
        the image is a strip that would be left too thin to hold a face (MIN_SIDE rows); never upscaled."""
        return min(1.0, max(self.max_side / max(height, width), self.PROBE_FACE / (min_face or self.min_face),
                            self.MIN_SIDE / min(height, width)))

    def _run(self, bgr: np.ndarray, scale: float, threshold: float,
             offset: tuple[float, float] = (0, 0)) -> list[Detection]:
        height, width = bgr.shape[:2]
        ox, oy = offset
        found = []
        for row in self.model.detect(bgr, threshold):
            # Rubbish rows (see MIN_SIDE) have infinite or empty boxes far outside the input: only
            # boxes with a size that touch the input count.
            x, y, w, h = (float(c) for c in row[:4])
            if not (np.isfinite(row).all() and w > 1 and h > 1 and x < width and y < height
                    and x + w > 0 and y + h > 0):
                continue
            v = [float(c) for c in row[:8]]
            v[0::2] = [(c + ox) / scale for c in v[0::2]]
            v[1::2] = [(c + oy) / scale for c in v[1::2]]
            v[2], v[3] = float(row[2]) / scale, float(row[3]) / scale  # sizes take no offset
            # Columns 4-5 are the eye on the picture's left, 6-7 the one on its right. They level the
            # face in its crop, but only YuNet at full resolution places them well enough: on a
            # portrait turned 20 degrees, its eyes at scale 0.56 gave a 9.1 degree tilt where 1.0 gave
            # 17.7 and dlib's full-resolution points 21.5. From a downscaled pass, no eyes: the crop
            # is then levelled by dlib's eye points.
            eyes = ((v[4], v[5]), (v[6], v[7])) if scale == 1 else (None, None)
            found.append(Detection(v[0], v[1], v[2], v[3], float(row[-1]), *eyes))
        return found

    def _level(self, bgr: np.ndarray, scale: float, threshold: float) -> list[Detection]:
        """Faces in one pyramid level, searched whole or in overlapping tiles."""
        height, width = bgr.shape[:2]
        if min(height, width) < self.MIN_SIDE:
            return []
        if max(height, width) <= self.TILE:
            return self._run(bgr, scale, threshold)
        step = self.TILE - self.LARGE_FACE
        whole: list[Detection] = []
        for y0 in range(0, max(1, height - self.LARGE_FACE), step):
            for x0 in range(0, max(1, width - self.LARGE_FACE), step):
                tile = bgr[y0:y0 + self.TILE, x0:x0 + self.TILE]
                th, tw = tile.shape[:2]
                if min(th, tw) < self.MIN_SIDE:
                    continue
                for det in self._run(tile, scale, threshold, (x0, y0)):
                    # A face cut by an inner tile edge lies whole in the neighbouring tile.
                    x, y = det.x * scale - x0, det.y * scale - y0
                    w, h = det.width * scale, det.height * scale
                    cut = ((x0 > 0 and x < 2) or (y0 > 0 and y < 2)
                           or (x0 + tw < width and x + w > tw - 2) or (y0 + th < height and y + h > th - 2))
                    if not cut:
                        whole.append(det)
        # A face in the overlap of two tiles is seen twice: keep the better-scored sighting.
        found: list[Detection] = []
        for det in sorted(whole, key=lambda d: -d.score):
            if all(iou(det, f) < self.SAME_FACE_IOU for f in found):
                found.append(det)
        return found

    def _recheck(self, bgr: np.ndarray, candidate: Detection, threshold: float) -> Detection | None:
        """The candidate's face, looked for again in a window around it at a finer scale."""
        height, width = bgr.shape[:2]
        w, h = candidate.width, candidate.height
        x0, y0 = max(0, int(candidate.x - w)), max(0, int(candidate.y - h))
        x1, y1 = min(width, int(candidate.x + 2 * w) + 1), min(height, int(candidate.y + 2 * h) + 1)
        scale = min(1.0, self.RECHECK_FACE / max(w, 1.0))
        window = bgr[y0:y1, x0:x1]
        if scale < 1:
            window = cv2.resize(window, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(window.shape[:2]) < self.MIN_SIDE:
            return None
        same = [d for d in self._run(window, scale, threshold, (x0 * scale, y0 * scale))
                if iou(d, candidate) >= self.SAME_FACE_IOU]
        return max(same, key=lambda d: d.score, default=None)

    def detect(self, bgr: np.ndarray, threshold: float | None = None, min_face: int | None = None) -> list[Detection]:
        """Faces scoring at least `threshold`, searched at the scale `min_face` needs (None: the
        detector's own settings)."""
        return self._detect(bgr, self.threshold if threshold is None else threshold, min_face)

    def _detect(self, bgr: np.ndarray, threshold: float, min_face: int | None) -> list[Detection]:
        height, width = bgr.shape[:2]
        if min(height, width) < self.MIN_SIDE:  # no face fits, at any scale YuNet is given
            return []
        scale = self.working_scale(height, width, min_face)
        work = bgr if scale == 1 else cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # At full resolution there is nothing finer to re-check with: no candidates then.
        probe = min(self.PROBE_THRESHOLD, threshold) if scale < 1 else threshold
        seen = self._level(work, scale, probe)  # re-checks and the coarse pyramid use `threshold`
        found: list[Detection] = []
        for det in sorted(seen, key=lambda d: -d.score):
            face: Detection | None = det
            if det.score < threshold:  # a candidate: the re-check decides
                small = det.width * scale < self.RECHECK_BELOW
                near = det.score >= threshold - self.NEAR_MISS
                if not (small or near) or any(iou(det, f) >= self.SAME_FACE_IOU for f in found):
                    continue
                face = self._recheck(bgr, det, threshold)
            if face is not None and all(iou(face, f) < self.SAME_FACE_IOU for f in found):
                found.append(face)
        # The pyramid for faces too large for YuNet at the working scale.
        coarsest = self.COARSE_SIDE / max(height, width)
        level = scale
        while level > coarsest:
            level = max(level / 2, coarsest)
            if min(height, width) * level < self.MIN_SIDE:
                break
            coarse = cv2.resize(work, None, fx=level / scale, fy=level / scale, interpolation=cv2.INTER_AREA)
            finer_scale = min(scale, 2 * level)
            for det in self._level(coarse, level, threshold):
                # Size this face had one level finer: only faces that level could not see are new.
                if max(det.width, det.height) * finer_scale < self.LARGE_FACE:
                    continue
                same = [f for f in found if iou(det, f) >= self.SAME_FACE_IOU]
                # A face far beyond the anchors may still come back from a finer level, squashed
                # (couple.jpg at 0.70: 417x758 px for a 597x827 face); this level's box replaces it.
                if all(max(f.width, f.height) * finer_scale >= self.DISTORTED_FACE for f in same):
                    found = [f for f in found if f not in same] + [det]
        return found


def iou(a: Detection, b: Detection) -> float:
    return box_iou((a.x, a.y, a.width, a.height), (b.x, b.y, b.width, b.height))


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def above(found: list[Detection], threshold: float | None) -> list[Detection]:
    """The detections scoring at least a request's `threshold`. Haar and HOG have no threshold
    setting of their own: without one, every detection counts."""
    return found if threshold is None else [d for d in found if d.score >= threshold]


class HaarDetector:
    name = "haar"
    model_file = "haarcascade_frontalface_default.xml"

    def __init__(self):
        self.model = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / self.model_file))
        if self.model.empty():
            raise RuntimeError("OpenCV's Haar cascade file is missing from the opencv package")

    def detect(self, bgr: np.ndarray, threshold: float | None = None, min_face: int | None = None) -> list[Detection]:
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes, _, weights = self.model.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                         minSize=(24, 24), outputRejectLevels=True)
        # Haar gives level weights, not probabilities: squash them into (0, 1) for the contract.
        return above([Detection(float(x), float(y), float(w), float(h), float(1 / (1 + np.exp(-float(s)))))
                      for (x, y, w, h), s in zip(boxes, np.ravel(weights) if len(boxes) else [])], threshold)


class HogDetector:
    name = "hog"
    model_file = "dlib_hog_frontal_face"

    def __init__(self):
        self.model = dlib.get_frontal_face_detector()

    def detect(self, bgr: np.ndarray, threshold: float | None = None, min_face: int | None = None) -> list[Detection]:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rects, scores, _ = self.model.run(rgb, 1, 0.0)
        return above([Detection(float(r.left()), float(r.top()), float(r.width()), float(r.height()),
                                float(1 / (1 + np.exp(-s))))
                      for r, s in zip(rects, scores)], threshold)
