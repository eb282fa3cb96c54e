"""Upload validation (`inspect`) and decoding (`decode`): the one place that reads client bytes.

image-input only inspects an upload (format, size, cost, sha256) and forwards the encoded bytes;
face-landmark decodes them. Both run the same checks, cheapest first, so a hostile upload costs a
header read wherever it is refused:

    empty -> over the byte cap -> not an image -> a format we refuse -> structures no encoder
    writes -> what decoding would cost -> too small -> corrupt pixel data

Every refusal is an `InputError` carrying a gRPC status code and a message for a person. Pillow,
numpy and the C codecs behind them report hostile bytes with a dozen exception types; all of them
become INVALID_ARGUMENT here, and nothing else escapes.

Decoding is memory-bounded: the decoded image counts at what it really costs (16-bit, alpha and
CMYK pixels are wider than RGB), and conversion to BGR runs a band of rows at a time straight into
the one output array, already in EXIF orientation, so the peak is Pillow's buffer plus the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np
from PIL import Image, UnidentifiedImageError

from faceanalysis.runtime.inputerror import InputError

if TYPE_CHECKING:
    from faceanalysis.runtime.config import Settings

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"})  # MPO: multi-picture JPEG from cameras
SEND_INSTEAD = "send JPEG, PNG, WebP, BMP or TIFF"

# We enforce our own cap, counted at decoded cost, before any pixel is decoded. Pillow's global one
# counts pixels only and would warn or raise with its own message.
Image.MAX_IMAGE_PIXELS = None
# Pillow reports metadata it skips (truncated EXIF or TIFF tags, a malformed MPO index) as warnings.
# They are the client's doing and change nothing we return, so they are silenced for the whole
# process: warnings.catch_warnings() per call is not thread-safe, and decoding runs in a thread pool.
warnings.filterwarnings("ignore", module=r"PIL\.")

# The first bytes of each format, so that only the matching Pillow plugin ever parses an upload
# (rather than every plugin Pillow has, in turn), and so that a file that claims to be a PNG but
# is broken is called a broken PNG. The formats after the accepted ones are those people send by
# mistake; they are named in the refusal instead of being called "not an image".
_SIGNATURES = [(re.compile(pattern, re.DOTALL), name) for pattern, name in [
    (rb"\xff\xd8\xff", "JPEG"),  # and MPO: Pillow's JPEG plugin tells them apart
    (rb"\x89PNG\r\n\x1a\n", "PNG"),  # and APNG
    (rb"RIFF....WEBP", "WEBP"),
    (rb"BM", "BMP"),
    (rb"II\*\x00|MM\x00\*|II\+\x00|MM\x00\+", "TIFF"),  # classic and BigTIFF
    (rb"GIF8[79]a", "GIF"),
    (rb"....ftyp(?:heic|heix|hevc|heim|heis|mif1|msf1|avif|avis)", "HEIF/AVIF"),
    (rb"\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51", "JPEG 2000"),
]]

# Pillow walks headers in Python, one read per piece (JPEG marker, PNG chunk, TIFF tag), keeping
# a Python object for each. A 20 MiB file of a million empty pieces would take seconds and
# hundreds of MiB to open, before any size check. A real image needs a few hundred reads, a few
# thousand at most (one per 64 KiB of pixel data, three per PNG chunk, two per run of an RLE BMP).
_MAX_READS = 500_000
# Each progressive JPEG scan is a pass over the whole image, and a scan can be 40 bytes: at 40 MP
# (0.8 ms a scan) a 20 MiB file of them keeps a worker busy for minutes. Encoders write about 10
# scans an image, and an MPO file holds a few images.
_MAX_JPEG_SCANS = 256
# Pillow turns each number of a TIFF directory's arrays into a Python object and builds a tile
# per strip: 4 bytes of file become ~300 bytes of memory. Writers use a few dozen tags and, even
# at one strip per row, far fewer strips than this.
_MAX_TIFF_TAGS = 4096
_MAX_TIFF_ARRAY = 65536
_TIFF_BYTE_TYPES = {1, 2, 6, 7}  # BYTE, ASCII, SBYTE, UNDEFINED: kept as one bytes/str object

# Bytes per pixel of each Pillow mode: what the decoded image takes before it becomes 3-byte BGR.
_MODE_BYTES = {
    "1": 1, "L": 1, "P": 1,
    "LA": 2, "La": 2, "PA": 2,  # and I;16*: see _mode_bytes
    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
    "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4,
}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_BAND_BYTES = 4 * 1024 * 1024  # output rows converted at a time


@dataclass(frozen=True)
class ImageHeader:
    format: str  # JPEG, PNG, WEBP, BMP, TIFF, MPO
    width: int  # after EXIF orientation
    height: int
    mode: str  # Pillow mode of the source: RGB, RGBA, I;16, CMYK, P, ...
    sha256: str  # of the encoded bytes
    decoded_bytes: int  # width * height * max(3, bytes per pixel of the mode or of the decoder's own buffer)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int  # counted at 3 bytes each: the budget is max_pixels * 3 decoded bytes
    min_side: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                   min_side=settings.min_image_side)


def inspect(data: bytes, limits: Limits) -> ImageHeader:
    """Check an upload without decoding its pixels: what image-input does before forwarding it."""
    with _opened(data, limits) as (_, header, _orientation):
        return header


def decode(data: bytes, limits: Limits) -> tuple[ImageHeader, np.ndarray]:
    """Check and decode an upload: H x W x 3 BGR uint8, C-contiguous, EXIF orientation applied.
    Only the first frame of an animation, multi-page TIFF or MPO is decoded."""
    with _opened(data, limits) as (img, header, orientation), _as_input_error(header.format):
        img.load()
        bgr = _to_bgr(img, orientation)
    return header, bgr  # leaving the with-block closed the Pillow image and freed its buffer


class _TooManyPieces(Exception):
    """Not a SyntaxError: Image.open would take that for "try the next plugin" and go on reading."""


class _Upload(io.BytesIO):
    """The upload as the file Pillow reads, refusing more than _MAX_READS reads."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self._reads_left = _MAX_READS

    def read(self, size: int | None = -1, /) -> bytes:
        self._reads_left -= 1
        if self._reads_left < 0:
            raise _TooManyPieces("it is split into too many pieces to parse")
        return super().read(size)


@contextlib.contextmanager
def _opened(data: bytes, limits: Limits) -> Iterator[tuple[Image.Image, ImageHeader, int]]:
    fmt = _check_bytes(data, limits)
    with _as_input_error(fmt):
        img = Image.open(_Upload(data), formats=[fmt])
    with img:
        with _as_input_error(fmt):
            orientation = _orientation(img)
            per_pixel = max(3, _mode_bytes(img.mode), _stored_bytes(img))
        width, height = img.size
        if orientation >= 5:  # a quarter turn
            width, height = height, width
        _check_size(width, height, img.mode, width * height * per_pixel, limits)
        header = ImageHeader(format=img.format, width=width, height=height, mode=img.mode,
                             sha256=hashlib.sha256(data).hexdigest(), decoded_bytes=width * height * per_pixel)
        yield img, header, orientation


def _check_bytes(data: bytes, limits: Limits) -> str:
    """Everything decided from the bytes alone; returns the format they claim to be."""
    if not data:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT, "image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"image is {len(data)} bytes; the limit is {limits.max_bytes} bytes "
                         "(FACEANALYSIS_MAX_IMAGE_BYTES)")
    fmt = next((name for signature, name in _SIGNATURES if signature.match(data)), None)
    if fmt is None:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT, f"not a recognised image; {SEND_INSTEAD}")
    if fmt not in ACCEPTED_FORMATS:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT, f"{fmt} images are not supported; {SEND_INSTEAD}")
    if fmt == "JPEG":
        # 0xFFDA starts a scan; entropy-coded data never holds 0xFF followed by anything but 0x00.
        scans = data.count(b"\xff\xda")
        if scans > _MAX_JPEG_SCANS:
            raise InputError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"JPEG image has {scans} scans; the limit is {_MAX_JPEG_SCANS} "
                             "(each scan is a pass over the whole image)")
    if fmt == "TIFF":
        _check_tiff_directory(data)
    return fmt


def _check_tiff_directory(data: bytes) -> None:
    """Refuse a first directory (the page we decode) no writer produces: see _MAX_TIFF_TAGS."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        (offset,) = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)
        (tags,) = struct.unpack_from(order + ("Q" if big else "H"), data, offset)
        if tags > _MAX_TIFF_TAGS:
            raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"TIFF image is corrupt: its directory has {tags} tags")
        entry, first = (struct.Struct(order + "HHQ"), offset + 8) if big else (struct.Struct(order + "HHI"), offset + 2)
        for i in range(tags):
            tag, kind, count = entry.unpack_from(data, first + i * (20 if big else 12))
            if count > _MAX_TIFF_ARRAY and kind not in _TIFF_BYTE_TYPES:
                raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"TIFF image is corrupt: tag {tag} holds {count} values")
    except (struct.error, OverflowError):
        pass  # the directory is cut short or outside the file: Pillow says so when it reads it


def _check_size(width: int, height: int, mode: str, decoded_bytes: int, limits: Limits) -> None:
    budget = limits.max_pixels * 3
    if decoded_bytes > budget:
        raise InputError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"image is {width}x{height} pixels in mode {mode}: decoding it takes {decoded_bytes} "
                         f"bytes; the limit is {budget} bytes ({limits.max_pixels} pixels at 3 bytes, "
                         "FACEANALYSIS_MAX_IMAGE_PIXELS)")
    if min(width, height) < limits.min_side:
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"image is {width}x{height}; each side must be at least {limits.min_side} pixels")


@contextlib.contextmanager
def _as_input_error(fmt: str) -> Iterator[None]:
    try:
        yield
    except InputError:
        raise
    except UnidentifiedImageError:  # the plugin refused the header; Pillow does not keep its reason
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{fmt} image is truncated or corrupt: its header cannot be read") from None
    except Exception as err:  # noqa: BLE001 - hostile bytes raise OSError, SyntaxError, struct.error,
        # EOFError, IndexError, TypeError, ValueError, MemoryError, ZeroDivisionError, ...
        reason = (str(err) or type(err).__name__)[:200]
        raise InputError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{fmt} image is truncated or corrupt: {reason}") from None


def _mode_bytes(mode: str) -> int:
    return 2 if mode.startswith("I;16") else _MODE_BYTES.get(mode, 4)  # unknown: count it wide


def _stored_bytes(img: Image.Image) -> int:
    """Bytes per pixel the decoder holds for a whole strip or canvas, where that is wider than the
    mode: libtiff fills strips and tiles at the file's own sample width (16-bit RGB: 6 bytes), and
    libwebp decodes to 4-byte canvases. Pillow's PNG, JPEG and BMP decoders unpack row by row, so a
    16-bit PNG never exists at its full width."""
    if img.format == "TIFF":
        bits = max(img.tag_v2.get(258, (1,)))
        samples = max(img.tag_v2.get(277, 1), len(img.getbands()))
        return -(-bits * samples // 8)
    if img.format == "WEBP":
        return 4
    return 0


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8; anything else, or EXIF that cannot be parsed, is 1 (ignored)."""
    try:
        # The base class reads what the header holds. PngImageFile.getexif would decode all the
        # pixels to look for an eXIf chunk after them, and inspect must not decode.
        value = Image.Image.getexif(img).get(0x0112)
    except Exception:  # noqa: BLE001 - garbage EXIF is ignored, never an error
        return 1
    return value if type(value) is int and 1 <= value <= 8 else 1


# For each EXIF orientation, a view of the upright output laid out like the stored pixels: writing
# the stored rows into it puts each pixel where it belongs, with no second full-size copy.
_STORED_VIEW: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left to right
    3: lambda a: a[::-1, ::-1],  # turned half way round
    4: lambda a: a[::-1],  # mirrored top to bottom
    5: lambda a: a.transpose(1, 0, 2),  # transposed
    6: lambda a: np.rot90(a),  # stored a quarter turn counter-clockwise of upright
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
    8: lambda a: np.rot90(a, -1),  # stored a quarter turn clockwise of upright
}


def _to_bgr(img: Image.Image, orientation: int) -> np.ndarray:
    width, height = img.size
    bgr = np.empty((width, height, 3) if orientation >= 5 else (height, width, 3), np.uint8)
    stored = _STORED_VIEW[orientation](bgr)
    peak = _peak(img) if img.mode in ("I", "F") else 0
    rows = max(1, _BAND_BYTES // (3 * width))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(top + rows, height)))
        stored[top:top + band.height] = _band_to_bgr(band, peak)
    return bgr


def _peak(img: Image.Image) -> float:
    """The value that becomes white for 32-bit integer and float pixels: 8- and 16-bit data keep
    their own range, anything else is scaled by its maximum."""
    _, high = img.getextrema()  # in C, without a copy
    return 255 if not high > 255 else 65535 if high <= 65535 else high


def _band_to_bgr(band: Image.Image, peak: float) -> np.ndarray:
    """A band of rows as uint8: rows x width x 3 in BGR order, or rows x width x 1 for grey."""
    if band.mode.startswith("I;16"):  # 16-bit grey (a tRNS key colour on it is ignored)
        return (np.asarray(band) >> 8).astype(np.uint8)[..., None]
    if band.mode in ("I", "F"):
        with np.errstate(all="ignore"):  # NaN and infinities end up black or white, quietly
            grey = np.asarray(band, dtype=np.float32) * np.float32(255 / peak)
            return np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None]
    if band.mode in _ALPHA_MODES or "transparency" in band.info:
        rgba = (band.convert("LA") if band.mode == "La" else band).convert("RGBA")  # no La -> RGBA in Pillow
        band = Image.new("RGB", band.size, "white")
        band.paste(rgba, mask=rgba)  # composited onto white
    elif band.mode in ("L", "1"):
        return np.asarray(band.convert("L"))[..., None]
    elif band.mode != "RGB":
        band = band.convert("RGB")
    # Pillow packs RGB straight to BGR bytes: no channel swap over the whole image afterwards.
    return np.frombuffer(band.tobytes("raw", "BGR"), np.uint8).reshape(band.height, band.width, 3)
