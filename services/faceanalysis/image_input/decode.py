"""Upload validation and decoding: the only place that turns client bytes into pixels.

Checks happen cheapest first, and nothing is decoded before the header's size was checked, so
a decompression bomb costs a header read. Every refusal says what was wrong.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"}  # MPO: multi-picture JPEG from cameras

# We enforce our own pixel cap before decoding; Pillow's global guard would only warn or raise
# with its own limit.
Image.MAX_IMAGE_PIXELS = None


class InputError(Exception):
    """A refused upload: gRPC status code plus a message for a person."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class DecodedImage:
    bgr: np.ndarray  # uint8, H x W x 3, EXIF orientation applied
    sha256: str
    format: str

    @property
    def width(self) -> int:
        return self.bgr.shape[1]

    @property
    def height(self) -> int:
        return self.bgr.shape[0]


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any mode to 8-bit RGB: grayscale and palette expand, alpha composites onto white,
    16-bit and float scale down, CMYK converts."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"))


def decode(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int) -> DecodedImage:
    if not data:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT, "image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InputError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         "not a recognised image; send JPEG, PNG, WebP, BMP or TIFF") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT, f"image header is corrupt: {err}") from None
    fmt = img.format or "unknown"
    if fmt not in ACCEPTED_FORMATS:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{fmt} images are not supported; send JPEG, PNG, WebP, BMP or TIFF")
    width, height = img.size
    if width * height > max_pixels:
        raise InputError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if min(width, height) < min_side:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"image is {width}x{height}; each side must be at least {min_side} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb8(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as err:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"image data is truncated or corrupt ({fmt}): {err}") from None
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedImage(bgr=bgr, sha256=hashlib.sha256(data).hexdigest(), format=fmt)
