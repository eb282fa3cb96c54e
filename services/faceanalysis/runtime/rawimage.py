"""RawImage (8-bit BGR pixels) to and from numpy: the aligned crops face-landmark sends on."""

from __future__ import annotations

import numpy as np

from faceanalysis.v1 import face_landmark_pb2


class BadRawImage(ValueError):
    pass


def to_message(bgr: np.ndarray) -> face_landmark_pb2.RawImage:
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise BadRawImage(f"expected HxWx3 uint8 pixels, got {bgr.dtype} {bgr.shape}")
    height, width = bgr.shape[:2]
    return face_landmark_pb2.RawImage(width=width, height=height, bgr=np.ascontiguousarray(bgr).tobytes())


def from_message(msg: face_landmark_pb2.RawImage) -> np.ndarray:
    if msg.width <= 0 or msg.height <= 0:
        raise BadRawImage(f"image size must be positive, got {msg.width}x{msg.height}")
    expected = msg.width * msg.height * 3
    if len(msg.bgr) != expected:
        raise BadRawImage(f"{msg.width}x{msg.height} BGR needs {expected} bytes, got {len(msg.bgr)}")
    return np.frombuffer(msg.bgr, dtype=np.uint8).reshape(msg.height, msg.width, 3)
