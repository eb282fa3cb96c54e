"""Hostile and awkward uploads, for any test that feeds bytes to something that reads images.

HOSTILE: name -> (make bytes, the status code it must get, words the message must contain), under
the default limits (20 MiB, 40 M pixels at 3 bytes each, 16 pixels a side).
ACCEPTED: name -> (make bytes, the format it must be read as): awkward but valid files that must
decode to an upright picture in which Obama's face can be found.

Builders are cached and cheap (under 2 s each): large files are described by their headers, and
many-frame files repeat one tiny hand-written frame.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable

import grpc
import numpy as np
from PIL import Image

from tests.support import image

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MiB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- building blocks ---------------------------------------------------------------------------

@functools.cache
def obama_jpeg() -> bytes:
    return image("face_recognition/obama.jpg").read_bytes()


@functools.cache
def obama() -> Image.Image:
    """Obama, upright, RGB, 910x1137. Shared: copy before changing it."""
    return Image.open(io.BytesIO(obama_jpeg())).convert("RGB")


def save(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, depth: int, colour: int, idat: bytes, before_idat: bytes = b"") -> bytes:
    """A PNG from its parts; idat is the compressed image data as it goes in the file."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + before_idat + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_rows(pixels: np.ndarray) -> bytes:
    """Compressed PNG image data for an H x W (x C) array, big-endian as PNG wants it."""
    rows = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(pixels.shape[0], -1).view(np.uint8)
    return zlib.compress(np.hstack([np.zeros((rows.shape[0], 1), np.uint8), rows]).tobytes(), 6)


def apng(width: int, height: int, colour: int, first_idat: bytes, frames: int) -> bytes:
    """An APNG whose first frame is the IDAT image, followed by frames-1 one-pixel frames."""
    tiny = zlib.compress(b"\x00" + bytes(3 if colour == 2 else 1))
    chunks = [png_chunk(b"acTL", struct.pack(">II", frames, 0)),
              png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 10, 0, 0)),
              png_chunk(b"IDAT", first_idat)]
    for frame in range(1, frames):
        chunks.append(png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 2 * frame - 1, 1, 1, 0, 0, 1, 10, 0, 0)))
        chunks.append(png_chunk(b"fdAT", struct.pack(">I", 2 * frame) + tiny))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + b"".join(chunks) + png_chunk(b"IEND", b"")


_TIFF_TYPES = {3: "H", 4: "I"}  # SHORT, LONG


def tiff(tags: dict[int, tuple[int, list[int]]], pixels: bytes = b"") -> bytes:
    """A little-endian TIFF with one directory; pixels start at offset 8 (strip offset 8)."""
    ifd_at = 8 + len(pixels) + len(pixels) % 2
    blobs_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, blobs = [], b""
    for tag, (kind, values) in sorted(tags.items()):
        raw = struct.pack(f"<{len(values)}{_TIFF_TYPES[kind]}", *values)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field, blobs = struct.pack("<I", blobs_at + len(blobs)), blobs + raw
        entries.append(struct.pack("<HHI", tag, kind, len(values)) + field)
    return (b"II*\x00" + struct.pack("<I", ifd_at) + pixels + b"\x00" * (len(pixels) % 2)
            + struct.pack("<H", len(tags)) + b"".join(entries) + b"\x00\x00\x00\x00" + blobs)


def tiff_tags(width: int, height: int, bits: list[int], photometric: int, data_bytes: int,
              strips: int = 1) -> dict[int, tuple[int, list[int]]]:
    """Tags of an uncompressed image in `strips` strips that all point at the same data."""
    return {256: (4, [width]), 257: (4, [height]), 258: (3, bits), 259: (3, [1]), 262: (3, [photometric]),
            273: (4, [8] * strips), 277: (3, [len(bits)]), 278: (4, [max(1, height // strips)]),
            279: (4, [data_bytes] * strips)}


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF) claiming another size."""
    at = 2
    while jpeg[at + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments: EXIF may hold a thumbnail's SOF
        at += 2 + struct.unpack_from(">H", jpeg, at + 2)[0]
    return jpeg[:at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9:]


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


def jpeg_markers(data: bytes) -> list[int]:
    """Offsets of the markers after the first scan header: where scans and tables start."""
    first_scan = data.index(b"\xff\xda")
    return [i for i in range(first_scan, len(data) - 1)
            if data[i] == 0xFF and data[i + 1] not in (0x00, 0xFF) and not 0xD0 <= data[i + 1] <= 0xD7]


# --- hostile ---------------------------------------------------------------------------------------

@functools.cache
def png_bomb() -> bytes:
    """20000 x 20000 grey, all zeros: 400 MB of pixels in ~400 KB."""
    packer = zlib.compressobj(9)
    rows = bytes(20001 * 200)
    idat = b"".join(packer.compress(rows) for _ in range(100)) + packer.flush()
    return png(20000, 20000, 8, 0, idat)


@functools.cache
def animated_gif(frames: int = 10_000) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    # graphic control extension, image descriptor, then one pixel of LZW data (code size 2)
    frame = (b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
             + b"\x02\x02\x44\x01\x00")
    return screen + frame * frames + b"\x3b"


@functools.cache
def jpeg_many_scans(scans: int = 10_000) -> bytes:
    """A progressive JPEG with its smallest scan repeated: each copy is another pass over the image."""
    data = save(obama().resize((91, 113)), "JPEG", quality=85, progressive=True)
    markers = jpeg_markers(data)
    start, end = min(((a, b) for a, b in zip(markers, markers[1:]) if data[a + 1] == 0xDA), key=lambda s: s[1] - s[0])
    return data[:end] + data[start:end] * scans + data[end:]


def bmp(width: int, height: int, pixels: bytes, *, header_size: int = 40, bits: int = 24,
        compression: int = 0, palette: bytes = b"") -> bytes:
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", header_size, width, height, 1, bits, compression, len(pixels), 2835, 2835,
                       len(palette) // 4, 0)
    return struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def webp_header(width: int, height: int) -> bytes:
    """A lossless WebP whose header claims width x height, followed by junk."""
    bits = (width - 1) | (height - 1) << 14
    body = b"\x2f" + struct.pack("<I", bits) + bytes(63)  # RIFF chunks have even sizes
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8L" + struct.pack("<I", len(body)) + body


def zip_archive() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.txt", "hello " * 100)
    return archive.getvalue()


def polyglot() -> bytes:
    """A JPEG start (SOI and a JFIF segment) followed by a ZIP archive."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + zip_archive()


def _png_small(width: int, height: int) -> bytes:
    return save(Image.new("RGB", (width, height), "grey"), "PNG")


def _with_bad_crc(data: bytes) -> bytes:
    at = 8 + 8 + 13  # the IHDR checksum
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 4]) + data[at + 4:]


def _webp_bad_riff_size() -> bytes:
    data = save(obama(), "WEBP", quality=80)
    return data[:4] + struct.pack("<I", len(data) + 5000) + data[8:]


def _tiff_bogus_strip() -> bytes:
    tags = tiff_tags(64, 64, [8], 1, 64 * 64)
    tags[273] = (4, [0x7FFF0000])
    return tiff(tags, bytes(16))


def _tiff_many_tags() -> bytes:
    tags = tiff_tags(64, 64, [8], 1, 64 * 64)
    tags.update({50000 + i: (3, [i]) for i in range(5000)})
    return tiff(tags, bytes(64 * 64))


def _tiff_huge_tiles() -> bytes:
    tags = tiff_tags(64, 64, [8], 1, 64 * 64)
    for tag in (273, 278, 279):
        del tags[tag]
    tags.update({322: (4, [0x40000000]), 323: (4, [0x40000000]), 324: (4, [8]), 325: (4, [64 * 64])})
    return tiff(tags, bytes(64 * 64))


def _bmp_rle_runs(runs: int = 1_000_000) -> bytes:
    """8-bit RLE: a run of one pixel per two bytes, decoded by Pillow in Python."""
    width = 1000
    row = b"\x01\x07" * width + b"\x00\x00"
    return bmp(width, runs // width, row * (runs // width), bits=8, compression=1, palette=bytes(1024))


def _sixteen_bit_rgba_png_over_cap() -> bytes:
    # 33 M pixels: under the 40 M pixel count, but 4 bytes each once decoded (132 MB > 120 MB)
    return png(6000, 5500, 16, 6, zlib.compress(bytes(64)))


HOSTILE: dict[str, tuple[Callable[[], bytes], grpc.StatusCode, str]] = {
    # cheapest checks
    "empty": (lambda: b"", INVALID, "empty"),
    "over the byte cap": (lambda: b"\xff\xd8\xff" + bytes(20 * MiB), EXHAUSTED, "limit"),
    # not images
    "random bytes": (lambda: random.Random(7).randbytes(4096), INVALID, "not a recognised image"),
    "html": (lambda: b"<!DOCTYPE html><html><body><img src=x></body></html>", INVALID, "not a recognised image"),
    "text": (lambda: b"just some words, not a picture\n" * 10, INVALID, "not a recognised image"),
    "json": (lambda: b'{"image": "aGVsbG8=", "format": "png"}', INVALID, "not a recognised image"),
    "zip": (zip_archive, INVALID, "not a recognised image"),
    "pdf": (lambda: b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", INVALID, "not a recognised image"),
    "elf": (lambda: b"\x7fELF\x02\x01\x01" + bytes(57), INVALID, "not a recognised image"),
    "svg": (lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="99" height="99"/>',
            INVALID, "not a recognised image"),
    "utf-16 text that spells a png signature": (lambda: "\x89PNG\r\n\x1a\n IHDR".encode("utf-16"), INVALID,
                                                "not a recognised image"),
    "jpeg soi only": (lambda: b"\xff\xd8", INVALID, "not a recognised image"),
    # formats we refuse, named
    "gif": (lambda: save(Image.new("P", (64, 64)), "GIF"), INVALID, "GIF images are not supported"),
    "animated gif, 10000 frames": (animated_gif, INVALID, "not supported"),
    "heic": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), INVALID, "not supported"),
    # broken headers
    "jpeg soi and a marker start": (lambda: b"\xff\xd8\xff", INVALID, "corrupt"),
    "jpeg garbage after soi": (lambda: b"\xff\xd8\xff" + random.Random(3).randbytes(2000), INVALID, "corrupt"),
    "jpeg cut in its header": (lambda: obama_jpeg()[:400], INVALID, "truncated"),
    "polyglot: jpeg header, then a zip": (polyglot, INVALID, "corrupt"),
    "png signature only": (lambda: PNG_SIGNATURE, INVALID, "corrupt"),
    "png with a bad checksum": (lambda: _with_bad_crc(_png_small(64, 64)), INVALID, "corrupt"),
    "png width 0": (lambda: png(0, 64, 8, 0, zlib.compress(b"")), INVALID, "corrupt"),
    "png huge iccp chunk": (lambda: png(64, 64, 8, 0, zlib.compress(bytes(65 * 64)), png_chunk(
        b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(16 * MiB), 9))), INVALID, "corrupt"),
    "png huge ztxt chunk": (lambda: png(64, 64, 8, 0, zlib.compress(bytes(65 * 64)), png_chunk(
        b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(16 * MiB), 9))), INVALID, "corrupt"),
    "png 100 ztxt chunks of 1 MB each": (lambda: png(64, 64, 8, 0, zlib.compress(bytes(65 * 64)), png_chunk(
        b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(MiB - 1), 9)) * 100), INVALID, "corrupt"),
    "webp with a bad riff size": (_webp_bad_riff_size, INVALID, "corrupt"),
    "bmp with a negative width": (lambda: bmp(-64, 64, bytes(64 * 64 * 3)), EXHAUSTED, "pixels"),  # read unsigned
    "bmp with a huge header size": (lambda: bmp(64, 64, bytes(64 * 64 * 3), header_size=0xFFFFFFF0), INVALID,
                                    "corrupt"),
    "tiff header only": (lambda: b"II*\x00\x08\x00\x00\x00", INVALID, "corrupt"),
    "tiff with 5000 tags": (_tiff_many_tags, INVALID, "corrupt"),
    "tiff with 2.5 million strips": (lambda: tiff(tiff_tags(16, 2_500_000, [8], 1, 16, strips=2_500_000)),
                                     INVALID, "corrupt"),
    "tiff with 1-gigapixel tiles": (_tiff_huge_tiles, INVALID, "corrupt"),
    # headers that would make the parser loop a million times
    "jpeg with a million empty comments": (lambda: b"\xff\xd8" + b"\xff\xfe\x00\x02" * 1_000_000, INVALID, "pieces"),
    "jpeg with 2 MB of fill bytes": (lambda: b"\xff\xd8" + b"\xff" * 2 * MiB, INVALID, "pieces"),
    "png with a million private chunks": (lambda: png(64, 64, 8, 0, zlib.compress(bytes(65 * 64)),
                                                      png_chunk(b"prIv", b"") * 1_000_000), INVALID, "pieces"),
    "bmp rle with a million runs": (_bmp_rle_runs, INVALID, "pieces"),
    # too big to decode
    "png bomb 20000x20000": (png_bomb, EXHAUSTED, "pixels"),
    "png width 2**31-1": (lambda: png(2**31 - 1, 64, 8, 0, zlib.compress(bytes(64))), EXHAUSTED, "pixels"),
    "jpeg sof 65500x65500": (lambda: with_jpeg_size(obama_jpeg(), 65500, 65500), EXHAUSTED,
                             "FACEANALYSIS_MAX_IMAGE_PIXELS"),
    "bmp 100000x100000": (lambda: bmp(100_000, 100_000, bytes(64)), EXHAUSTED, "pixels"),
    "webp header 16383x16383": (lambda: webp_header(16383, 16383), EXHAUSTED, "pixels"),
    # the cap counts decoded bytes: these are under 40 M pixels but over 120 MB once decoded
    "16-bit rgba png over the decoded cap": (_sixteen_bit_rgba_png_over_cap, EXHAUSTED, "RGBA"),
    "cmyk jpeg over the decoded cap": (lambda: with_jpeg_size(save(Image.new("CMYK", (64, 64)), "JPEG"), 6000, 5500),
                                       EXHAUSTED, "CMYK"),
    "16-bit rgb tiff over the decoded cap": (lambda: tiff(tiff_tags(5000, 5000, [16, 16, 16], 2, 64), bytes(64)),
                                             EXHAUSTED, "limit"),
    "progressive jpeg with 10000 scans": (jpeg_many_scans, EXHAUSTED, "scans"),
    # too small
    "1x1 png": (lambda: _png_small(1, 1), INVALID, "at least"),
    "16x5 png": (lambda: _png_small(16, 5), INVALID, "at least"),
    "apng, 10000 frames, the first 8x8": (lambda: apng(8, 8, 0, zlib.compress(b"\x00" * 9 * 8), 10_000), INVALID,
                                          "at least"),
    # good headers, bad pixel data: inspect passes them, decode refuses them
    "jpeg truncated halfway": (lambda: obama_jpeg()[:len(obama_jpeg()) // 2], INVALID, "truncated"),
    "png idat that is not zlib": (lambda: png(64, 64, 8, 0, b"this is not zlib data" * 10), INVALID,
                                  "truncated or corrupt"),
    "bmp truncated": (lambda: save(obama(), "BMP")[:100_000], INVALID, "truncated"),
    "tiff with a strip offset past the end": (_tiff_bogus_strip, INVALID, "truncated or corrupt"),
}


# --- accepted ---------------------------------------------------------------------------------------

def _oriented(orientation: int) -> bytes:
    """Obama stored turned so that EXIF orientation `orientation` shows him upright."""
    stored = obama().transpose(Image.Transpose.ROTATE_90) if orientation == 6 else obama()
    return save(stored, "JPEG", quality=90, exif=exif(orientation))


def _garbage_exif() -> bytes:
    # a TIFF header whose directory count and offsets point past the end of the segment
    return save(obama(), "JPEG", quality=90, exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff\x01\x12\x00\x03")


def _exif_tag_past_end() -> bytes:
    # one entry (Orientation, 9 SHORTs) whose data offset is past the end: Pillow warns and skips it
    ifd = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + struct.pack(">HHII", 0x0112, 3, 9, 0x7FFF) + b"\x00" * 4
    return save(obama(), "JPEG", quality=90, exif=b"Exif\x00\x00" + ifd)


def _grey16() -> np.ndarray:
    return np.asarray(obama().convert("L"), np.uint16) * 257


def obama_rgba() -> Image.Image:
    """Obama with a transparent strip on the left: it must come out white."""
    rgba = obama().convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:, :150] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _png_palette_transparent() -> bytes:
    paletted = obama().quantize(255)
    return save(paletted, "PNG", transparency=0)


def _tiff_16bit_rgb() -> bytes:
    pixels = np.asarray(obama(), np.uint16) * 257
    height, width, _ = pixels.shape
    return tiff(tiff_tags(width, height, [16, 16, 16], 2, pixels.nbytes), pixels.astype("<u2").tobytes())


def _tiff_pages(pages: int = 1000) -> bytes:
    return save(obama(), "TIFF", save_all=True, append_images=[Image.new("L", (1, 1))] * (pages - 1))


def _mpo() -> bytes:
    return save(obama(), "MPO", save_all=True, append_images=[obama().resize((200, 250))])


ACCEPTED: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg": (obama_jpeg, "JPEG"),
    "jpeg, exif orientation 6": (lambda: _oriented(6), "JPEG"),
    "jpeg, exif orientation 9 (ignored)": (lambda: _oriented(9), "JPEG"),
    "jpeg, exif orientation 0 (ignored)": (lambda: _oriented(0), "JPEG"),
    "jpeg, exif orientation 65535 (ignored)": (lambda: _oriented(65535), "JPEG"),
    "jpeg, garbage exif": (_garbage_exif, "JPEG"),
    "jpeg, exif tag past its end": (_exif_tag_past_end, "JPEG"),
    "jpeg, a zip appended": (lambda: obama_jpeg() + zip_archive(), "JPEG"),
    "jpeg, progressive": (lambda: save(obama(), "JPEG", quality=85, progressive=True), "JPEG"),
    "jpeg, grey": (lambda: save(obama().convert("L"), "JPEG"), "JPEG"),
    "jpeg, cmyk": (lambda: save(obama().convert("CMYK"), "JPEG", quality=90), "JPEG"),
    "mpo": (_mpo, "MPO"),
    "png, 16-bit grey": (lambda: save(Image.fromarray(_grey16()), "PNG"), "PNG"),
    "png, 16-bit rgb": (lambda: png(910, 1137, 16, 2, png_rows(np.asarray(obama(), np.uint16) * 257)), "PNG"),
    "png, rgba": (lambda: save(obama_rgba(), "PNG"), "PNG"),
    "png, grey with alpha": (lambda: save(obama().convert("LA"), "PNG"), "PNG"),
    "png, palette with transparency": (_png_palette_transparent, "PNG"),
    "png, 1-bit": (lambda: save(obama().convert("1"), "PNG"), "PNG"),
    "apng, 10000 frames, obama first": (lambda: apng(910, 1137, 2, png_rows(np.asarray(obama())), 10_000), "PNG"),
    "webp": (lambda: save(obama(), "WEBP", quality=80), "WEBP"),
    "webp, grey": (lambda: save(obama().convert("L"), "WEBP", quality=80), "WEBP"),
    "webp, lossless with alpha": (lambda: save(obama_rgba(), "WEBP", lossless=True), "WEBP"),
    "bmp": (lambda: save(obama(), "BMP"), "BMP"),
    "bmp, 8-bit palette": (lambda: save(obama().quantize(256), "BMP"), "BMP"),
    "tiff, 1000 pages, obama first": (_tiff_pages, "TIFF"),
    "tiff, lzw": (lambda: save(obama(), "TIFF", compression="tiff_lzw"), "TIFF"),
    "tiff, 16-bit rgb": (_tiff_16bit_rgb, "TIFF"),
    "tiff, 16-bit grey": (lambda: save(Image.fromarray(_grey16()), "TIFF"), "TIFF"),
    "tiff, 32-bit integer grey": (lambda: save(Image.fromarray(_grey16().astype(np.int32)), "TIFF"), "TIFF"),
    "tiff, float grey": (lambda: save(Image.fromarray(np.asarray(obama().convert("L"), np.float32)), "TIFF"), "TIFF"),
    "tiff, cmyk": (lambda: save(obama().convert("CMYK"), "TIFF"), "TIFF"),
}
