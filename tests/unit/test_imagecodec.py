"""imagecodec: every hostile upload refused with the right code and words, quickly; every awkward
but valid one decoded upright; the decoded-cost cap; memory; and a fuzz run over decode."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from faceanalysis.runtime import imagecodec
from faceanalysis.runtime.config import Settings
from faceanalysis.runtime.imagecodec import InputError, Limits, decode, inspect
from tests import hostile
from tests.hostile import ACCEPTED, HOSTILE, obama, png, png_rows, save, tiff, tiff_tags
from tests.support import ROOT

# imagecodec silences Pillow's warnings for the process; pytest resets filters around each test.
pytestmark = pytest.mark.filterwarnings(r"ignore:::PIL\.")

DEFAULT = Limits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, min_side=16)  # what tests/hostile.py expects


def test_limits_come_from_settings():
    assert Limits.from_settings(Settings(max_image_bytes=1, max_image_pixels=2, min_image_side=3)) == Limits(1, 2, 3)
    fields = Settings.model_fields
    assert DEFAULT == Limits(fields["max_image_bytes"].default, fields["max_image_pixels"].default,
                             fields["min_image_side"].default)


def test_pillow_keeps_its_own_safety_limits():
    """We lift only Pillow's pixel cap (ours replaces it), never its truncation or text-chunk guards."""
    assert Image.MAX_IMAGE_PIXELS is None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert PngImagePlugin.MAX_TEXT_CHUNK == ImageFile.SAFEBLOCK
    assert PngImagePlugin.MAX_TEXT_MEMORY == 64 * ImageFile.SAFEBLOCK


# --- the corpus ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_is_refused_quickly(name):
    make, code, words = HOSTILE[name]
    data = make()
    started = time.perf_counter()
    with pytest.raises(InputError) as refused:
        decode(data, DEFAULT)
    elapsed = time.perf_counter() - started
    assert refused.value.code == code, refused.value.message
    assert words in refused.value.message
    assert elapsed < 5, f"took {elapsed:.1f} s"
    try:
        inspect(data, DEFAULT)
    except InputError as err:  # refused from the header: the same answer
        assert (err.code, err.message) == (refused.value.code, refused.value.message)
    else:  # only the pixel data is bad, and inspect does not read it
        assert "truncated or corrupt" in refused.value.message


def _face_found(bgr: np.ndarray) -> bool:
    cv2 = pytest.importorskip("cv2")
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return len(cascade.detectMultiScale(grey, 1.1, 5, minSize=(100, 100))) > 0


@pytest.mark.parametrize("name", ACCEPTED)
def test_awkward_input_decodes_upright(name):
    make, fmt = ACCEPTED[name]
    data = make()
    header, bgr = decode(data, DEFAULT)
    assert header == inspect(data, DEFAULT)
    assert header.format == fmt
    assert bgr.dtype == np.uint8 and bgr.flags.c_contiguous
    assert bgr.shape == (header.height, header.width, 3) == (1137, 910, 3)
    assert _face_found(bgr), "no upright face in the decoded image"


@pytest.mark.parametrize("name", ["png, rgba", "webp, lossless with alpha"])
def test_transparency_becomes_white(name):
    _, bgr = decode(ACCEPTED[name][0](), DEFAULT)
    assert bgr[:, :150].min() >= 254 and bgr[:, 200:].min() < 100


def test_orientation_6_swaps_width_and_height():
    data = ACCEPTED["jpeg, exif orientation 6"][0]()
    assert Image.open(io.BytesIO(data)).size == (1137, 910)  # as stored
    header = inspect(data, DEFAULT)
    assert (header.width, header.height) == (910, 1137)


@pytest.mark.parametrize("orientation", range(10))
def test_orientation_matches_pillow(orientation):
    """Every EXIF orientation, exactly as ImageOps.exif_transpose shows it; 0 and 9 are ignored."""
    stored = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), np.uint8))
    data = save(stored, "PNG", exif=hostile.exif(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    header, bgr = decode(data, Limits(1 << 20, 10_000, 16))
    assert (header.width, header.height) == expected.size
    np.testing.assert_array_equal(bgr, np.asarray(expected)[:, :, ::-1])


def test_grey_and_sixteen_bit_keep_their_values():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for data, expected in [(save(Image.fromarray(grey), "PNG"), grey),
                           (save(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), grey),
                           (png(16, 16, 16, 2, png_rows(np.dstack([grey.astype(np.uint16) * 257] * 3))), grey)]:
        _, bgr = decode(data, DEFAULT)
        for channel in range(3):
            np.testing.assert_array_equal(bgr[:, :, channel], expected)


# --- the cap counts decoded bytes ------------------------------------------------------------------

SMALL = Limits(max_bytes=1 << 20, max_pixels=10_000, min_side=1)  # a budget of 30000 decoded bytes


def _tiff16(width: int, height: int) -> bytes:
    pixels = bytes(width * height * 6)
    return tiff(tiff_tags(width, height, [16, 16, 16], 2, len(pixels)), pixels)


@pytest.mark.parametrize(("make", "decoded_bytes"), [
    (lambda: save(Image.new("RGB", (100, 100)), "PNG"), 30_000),
    (lambda: save(Image.new("L", (100, 100)), "PNG"), 30_000),  # grey still becomes 3-byte BGR
    (lambda: save(Image.new("I;16", (100, 100)), "PNG"), 30_000),
    (lambda: png(100, 100, 16, 2, png_rows(np.zeros((100, 100, 3), np.uint16))), 30_000),  # unpacked row by row
    (lambda: save(Image.new("RGB", (101, 100)), "PNG"), 30_300),
    (lambda: save(Image.new("RGBA", (100, 75)), "PNG"), 30_000),
    (lambda: save(Image.new("RGBA", (100, 100)), "PNG"), 40_000),
    (lambda: save(Image.new("CMYK", (100, 100)), "JPEG"), 40_000),
    (lambda: save(Image.new("F", (100, 100)), "TIFF"), 40_000),
    (lambda: _tiff16(100, 50), 30_000),  # libtiff holds strips at 6 bytes a pixel
    (lambda: _tiff16(100, 100), 60_000),
    (lambda: save(Image.new("RGB", (100, 75)), "WEBP"), 30_000),  # libwebp decodes to 4 bytes a pixel
    (lambda: save(Image.new("RGB", (100, 100)), "WEBP"), 40_000),
], ids=["rgb", "grey", "grey16", "rgb16 png", "rgb over", "rgba 100x75", "rgba", "cmyk", "float", "rgb16 tiff half",
        "rgb16 tiff", "webp 100x75", "webp"])
def test_cap_counts_decoded_bytes(make, decoded_bytes):
    data = make()
    if decoded_bytes <= SMALL.max_pixels * 3:
        assert inspect(data, SMALL).decoded_bytes == decoded_bytes
        return
    with pytest.raises(InputError) as refused:
        inspect(data, SMALL)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    for words in (f"takes {decoded_bytes} bytes", "limit is 30000 bytes", "FACEANALYSIS_MAX_IMAGE_PIXELS"):
        assert words in refused.value.message


# --- inspect reads headers only; many frames cost one ----------------------------------------------

def test_inspect_never_decodes(monkeypatch):
    datas = {name: make() for name, (make, _) in ACCEPTED.items()}
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("inspect decoded pixels"))
    for name, data in datas.items():
        assert inspect(data, DEFAULT).format == ACCEPTED[name][1], name


@pytest.mark.parametrize("name", ["apng, 10000 frames, obama first", "tiff, 1000 pages, obama first"])
def test_only_the_first_frame_is_read(name, monkeypatch):
    """Walking the other frames would take at least two reads each: far more than we allow here."""
    data = ACCEPTED[name][0]()
    monkeypatch.setattr(imagecodec, "_MAX_READS", 500)
    assert decode(data, DEFAULT)[1].shape == (1137, 910, 3)


# --- memory ---------------------------------------------------------------------------------------

_MAKE = """
import sys
import numpy as np
from PIL import Image
kind, path = sys.argv[1:]
if kind == "jpeg":  # a noise-free gradient, 40 MP
    width, height = 7300, 5480
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (np.arange(width) * 255 // width)[None, :]
    rgb[..., 1] = (np.arange(height) * 255 // height)[:, None]
    rgb[..., 2] = 128
    Image.fromarray(rgb).save(path, "JPEG", quality=85)
else:  # 16-bit grey, 39.9 MP
    width, height = 7300, 5465
    grey = (np.arange(width, dtype=np.uint32)[None, :] * 8 + np.arange(height, dtype=np.uint32)[:, None]) % 65536
    Image.fromarray(grey.astype(np.uint16)).save(path, "PNG", compress_level=1)
"""

_MEASURE = """
import json, resource, sys
from faceanalysis.runtime import imagecodec
limits = imagecodec.Limits(max_bytes=64 << 20, max_pixels=50_000_000, min_side=16)
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
header, bgr = imagecodec.decode(data, limits)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth": (after - before) * 1024, "file": len(data), "output": bgr.nbytes, "mode": header.mode,
                  "size": [header.width, header.height]}))
"""


@pytest.mark.parametrize(("kind", "pillow_bytes_per_pixel"), [("jpeg", 4), ("png16", 2)])  # Pillow keeps RGB as RGBX
def test_decoding_peak_memory(kind, pillow_bytes_per_pixel, tmp_path):
    """Peak RSS growth while decoding: Pillow's buffer plus the one BGR output, and no more (the
    old decoder went through float64 for 16-bit input, and through whole-image copies)."""
    path = tmp_path / kind
    subprocess.run([sys.executable, "-c", _MAKE, kind, str(path)], check=True, timeout=120)
    measured = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, str(path)], check=True, cwd=ROOT, timeout=120,
                                         capture_output=True, text=True).stdout)
    width, height = measured["size"]
    pillow, output = width * height * pillow_bytes_per_pixel, measured["output"]
    print(f"\n{kind} {width}x{height} {measured['mode']}: file {measured['file'] / 1e6:.1f} MB, peak RSS growth "
          f"{measured['growth'] / 1e6:.0f} MB (Pillow buffer {pillow / 1e6:.0f} MB + output {output / 1e6:.0f} MB)")
    expected = pillow + output
    assert measured["growth"] < expected * 1.1 + 32e6


# --- no warning escapes -----------------------------------------------------------------------------

_WARNINGS = """
import json, warnings
warnings.simplefilter("always")  # everything shows, unless imagecodec's own filter (put first) hides it
from faceanalysis.runtime import imagecodec
from tests.hostile import ACCEPTED, HOSTILE

datas = [make() for make, *_ in [*HOSTILE.values(), *ACCEPTED.values()]]

def run():
    with warnings.catch_warnings(record=True) as caught:
        for data in datas:
            for step in (imagecodec.inspect, imagecodec.decode):
                try:
                    step(data, imagecodec.Limits(20 << 20, 40_000_000, 16))
                except imagecodec.InputError:
                    pass
    return [str(w.message) for w in caught]

quiet = run()
warnings.filters[:] = [f for f in warnings.filters if getattr(f[3], "pattern", None) != r"PIL\\."]
print(json.dumps({"quiet": quiet, "without_filter": run()}))
"""


def test_no_warning_escapes():
    """Run in a fresh interpreter: pytest resets warning filters around each test."""
    result = json.loads(subprocess.run([sys.executable, "-c", _WARNINGS], check=True, cwd=ROOT, timeout=120,
                                       capture_output=True, text=True).stdout)
    assert result["without_filter"], "the corpus no longer provokes a Pillow warning: this test proves nothing"
    assert result["quiet"] == []


# --- fuzz -------------------------------------------------------------------------------------------

def _seeds() -> list[bytes]:
    small = obama().resize((32, 40))
    grey16 = Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257)
    return [
        save(small, "JPEG", quality=80), save(small, "JPEG", progressive=True),
        save(small, "JPEG", exif=hostile.exif(6)),
        save(small.convert("CMYK"), "JPEG"), save(small, "MPO", save_all=True, append_images=[small]),
        save(small, "PNG"), save(small.quantize(16), "PNG", transparency=0), save(grey16, "PNG"),
        save(small.convert("LA"), "PNG"), save(small, "PNG", save_all=True, append_images=[small.rotate(90)] * 2),
        save(small, "WEBP", quality=70), save(small.convert("RGBA"), "WEBP", lossless=True),
        save(small, "BMP"), save(small.quantize(16), "BMP"),
        save(small, "TIFF"), save(small, "TIFF", compression="tiff_lzw"), save(grey16, "TIFF"),
        save(small, "TIFF", save_all=True, append_images=[small] * 2),
    ]


_FIELDS = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def _mutants(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        # most of what a parser trusts sits in the first bytes: aim there half the time
        at = draw(st.one_of(st.integers(0, 80), st.integers(0, len(data)))) if data else 0
        match draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "field"])):
            case "flip":
                data[at:at + 1] = bytes([data[at] ^ draw(st.integers(1, 255))]) if at < len(data) else b""
            case "cut":
                del data[at:]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=32))
            case "overwrite":
                patch = draw(st.binary(min_size=1, max_size=8))
                data[at:at + len(patch)] = patch
            case "field":  # a size, offset or count set to an edge value
                size = draw(st.sampled_from([1, 2, 4]))
                value = draw(st.sampled_from(_FIELDS)) & ((1 << 8 * size) - 1)
                data[at:at + size] = value.to_bytes(size, draw(st.sampled_from(["big", "little"])))
    return bytes(data)


def test_fuzz_decode():
    """Mutated small images of every format: only InputError may escape, and whatever decodes is a
    proper BGR image. Reproducible (derandomized); about 2000 examples."""
    limits = Limits(max_bytes=1 << 20, max_pixels=2_000_000, min_side=1)
    outcomes = {"decoded": 0, "refused": 0}

    @settings(max_examples=2000, deadline=2000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_mutants(_seeds()))
    def decode_mutant(data: bytes):
        try:
            header, bgr = decode(data, limits)
        except InputError as err:
            assert err.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert err.message
            outcomes["refused"] += 1
            return
        assert bgr.dtype == np.uint8 and bgr.flags.c_contiguous
        assert bgr.shape == (header.height, header.width, 3)
        outcomes["decoded"] += 1

    started = time.perf_counter()
    decode_mutant()
    print(f"\nfuzz: {sum(outcomes.values())} examples in {time.perf_counter() - started:.1f} s: {outcomes}")
    assert sum(outcomes.values()) >= 1000
