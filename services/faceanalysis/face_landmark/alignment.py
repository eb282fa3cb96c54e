"""Eye-aligned context crops.

DeepFace aligns a face by rotating a region twice the box size about the box centre until the
eyes are level, then cuts the (margin-expanded) box out of the middle. We do the rotation here,
once, and send face-attributes the rotated context: `CONTEXT` times the box on each side, so it
can cut any margin up to 100 % without seeing the rest of the image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Context around the box sent onward, as a multiple of the box size (2 = DeepFace's sub-image).
CONTEXT = 2.0


def eye_angle(image_left_eye: tuple[float, float], image_right_eye: tuple[float, float]) -> float:
    """Rotation in degrees that levels the eyes (DeepFace's convention)."""
    (lx, ly), (rx, ry) = image_left_eye, image_right_eye
    return math.degrees(math.atan2(ry - ly, rx - lx))


def aligned_crop(bgr: np.ndarray, box: tuple[float, float, float, float], angle: float,
                 max_side: int, face_size: int | None = None) -> tuple[np.ndarray, float, float]:
    """Rotated context crop centred on the box, at most `max_side` pixels a side and, given a
    `face_size`, shrunk so that the box's longer side is at most that; returns (crop, face_width,
    face_height) in crop pixels.

    Pixels outside the image are black, as in DeepFace's bordered alignment.
    """
    x, y, w, h = box
    cx, cy = x + w / 2.0, y + h / 2.0
    out_w, out_h = max(1, int(round(w * CONTEXT))), max(1, int(round(h * CONTEXT)))
    scale = min(1.0, max_side / max(out_w, out_h), (face_size or math.inf) / max(w, h))
    size = (max(1, int(out_w * scale)), max(1, int(out_h * scale)))
    # Shrunk by 2x or more (a large face, or crops sized for the models' face_size): the region the
    # crop reads is first averaged down by a whole factor (INTER_AREA's fast path), then rotated and
    # scaled the rest of the way at the crop's own size. On the 71 faces of the shared JPEGs, at
    # face_size 160, that took 1.1 ms a face instead of 5.1; the 15 crops it made differ from the
    # full-size path's by a mean of at most 2 grey levels (the others are shrunk less than 2x).
    factor = int(1 / scale + 1e-9)
    if factor >= 2 and (shrunk := _shrunk_region(bgr, (cx, cy), (out_w, out_h), angle, factor)) is not None:
        region, (x0, y0) = shrunk
        # Where the full-size path puts a pixel (turned about the box centre into an out-sized crop,
        # then shrunk to `size` on each axis), for a pixel of the region: block i of the region is
        # centred on pixel i * factor + (factor - 1) / 2 of the image.
        turn = cv2.getRotationMatrix2D((0.0, 0.0), angle, 1.0)[:, :2]
        shrink = np.diag([size[0] / out_w, size[1] / out_h])
        offset = np.array([x0 - cx, y0 - cy]) + (factor - 1) / 2
        matrix = np.hstack([shrink @ turn * factor,
                            (shrink @ (turn @ offset + [out_w / 2 + 0.5, out_h / 2 + 0.5]) - 0.5)[:, None]])
        crop = cv2.warpAffine(region, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))
        return crop, w * size[0] / out_w, h * size[1] / out_h
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[0, 2] += out_w / 2.0 - cx
    matrix[1, 2] += out_h / 2.0 - cy
    # Bicubic only where the crop is kept at full size. A crop shrunk afterwards (INTER_AREA
    # averages the pixels anyway) is warped bilinearly: on the 75 faces of the shared photos that
    # halved the crop's cost (6.3 -> 2.9 ms a face) for a mean difference under 1 grey level.
    crop = cv2.warpAffine(bgr, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR if scale < 1.0 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if scale < 1.0:
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop, w * crop.shape[1] / out_w, h * crop.shape[0] / out_h


def _shrunk_region(bgr: np.ndarray, centre: tuple[float, float], out: tuple[int, int], angle: float,
                   factor: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The part of `bgr` that an `out`-sized crop turned by `angle` about `centre` reads, averaged
    down by `factor`, and where its top-left corner is in `bgr`; None when nothing of it is left."""
    (cx, cy), (out_w, out_h) = centre, out
    cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    # Half the rotated crop's bounding box, plus a margin for the interpolation's neighbours.
    half_w = (out_w * cos + out_h * sin) / 2 + 2 * factor
    half_h = (out_w * sin + out_h * cos) / 2 + 2 * factor
    height, width = bgr.shape[:2]
    # Whole blocks of factor x factor pixels, aligned to the image, so block i covers pixels
    # [i * factor, (i + 1) * factor) of the region.
    x0, y0 = max(0, int(cx - half_w)) // factor * factor, max(0, int(cy - half_h)) // factor * factor
    columns = (min(width, math.ceil(cx + half_w)) - x0) // factor
    rows = (min(height, math.ceil(cy + half_h)) - y0) // factor
    if columns < 1 or rows < 1:
        return None
    region = bgr[y0:y0 + rows * factor, x0:x0 + columns * factor]
    return cv2.resize(region, (columns, rows), interpolation=cv2.INTER_AREA), (x0, y0)
