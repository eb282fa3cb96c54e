"""Bad input gets a clear status code and changes nothing; awkward-but-valid input is converted."""

from __future__ import annotations

import io
import os
import struct
import zlib

import grpc
import numpy as np
import pytest
import redis
from PIL import Image

from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.support import image

MiB = 1024 * 1024


def obama_bytes() -> bytes:
    return image("face_recognition/obama.jpg").read_bytes()


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 20000x20000 grayscale PNG of ~400 MB pixels that compresses to a few hundred KB."""
    row = b"\x00" + bytes(width)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


REFUSED = {
    "empty": (lambda: b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "random bytes": (lambda: os.urandom(4096), grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
    "truncated jpeg": (lambda: obama_bytes()[: len(obama_bytes()) // 3], grpc.StatusCode.INVALID_ARGUMENT,
                       "truncated"),
    "1x1 image": (lambda: encode(Image.new("RGB", (1, 1)), "PNG"), grpc.StatusCode.INVALID_ARGUMENT, "at least"),
    "20000x20000 png bomb": (png_bomb, grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
    "oversize": (lambda: obama_bytes() + os.urandom(21 * MiB), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    "gif": (lambda: encode(Image.new("RGB", (64, 64)), "GIF"), grpc.StatusCode.INVALID_ARGUMENT, "not supported"),
}


def state(local_stack) -> tuple[int, int]:
    client = redis.Redis.from_url(local_stack.redis.url)
    archive = local_stack.archive_dir
    files = len(list(archive.glob("*"))) if archive.exists() else 0
    return client.dbsize(), files


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_with_clear_status_and_nothing_stored(api, local_stack, kind):
    make, code, words = REFUSED[kind]
    before = state(local_stack)
    with pytest.raises(grpc.RpcError) as err:
        api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=make()), timeout=60)
    assert err.value.code() == code
    assert words in err.value.details()
    assert state(local_stack) == before
    # The service is unharmed: the next real photo still works.
    ok = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60)
    assert len(ok.result.faces) == 1


def converted_inputs():
    obama = Image.open(image("face_recognition/obama.jpg")).convert("RGB")
    gray16 = (np.asarray(obama.convert("L"), dtype=np.uint16) * 257)
    rgba = obama.convert("RGBA")
    rgba.putalpha(200)
    return {
        "cmyk jpeg": (encode(obama.convert("CMYK"), "JPEG", quality=92), "JPEG"),
        "16-bit png": (encode(Image.fromarray(gray16), "PNG"), "PNG"),
        "rgba png": (encode(rgba, "PNG"), "PNG"),
        "grayscale webp": (encode(obama.convert("L"), "WEBP", quality=90), "WEBP"),
        "bmp": (encode(obama, "BMP"), "BMP"),
        "tiff": (encode(obama, "TIFF"), "TIFF"),
        # Bytes are sniffed, never trusted by name: a PNG that a client calls photo.jpg is a PNG.
        "wrong extension": (encode(obama, "PNG"), "PNG"),
    }


@pytest.mark.parametrize("kind", list(converted_inputs()))
def test_converted_not_refused(api, kind):
    data, fmt = converted_inputs()[kind]
    result = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=data, options=common_pb2.AnalysisOptions(no_store=True)), timeout=60).result
    assert result.image.format == fmt
    assert len(result.faces) == 1
    assert result.faces[0].gender.label == common_pb2.GENDER_MAN


def test_hostile_analysis_ids_are_refused(api):
    for bad in ["../../etc/passwd", "x" * 32, "", "0" * 31, "A" * 32]:
        for call, request in [(api.GetAnalysis, image_input_pb2.GetAnalysisRequest(analysis_id=bad)),
                              (api.DeleteAnalysis, image_input_pb2.DeleteAnalysisRequest(analysis_id=bad))]:
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def scrape(url: str) -> dict[tuple, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_refusals_are_counted_by_status_code(api, local_stack):
    url = local_stack.metrics_urls["image-input"]
    key = ("faceanalysis_grpc_requests_total",
           (("code", "INVALID_ARGUMENT"), ("method", "AnalyzeImage"), ("service", "image-input")))
    ok = ("faceanalysis_grpc_requests_total", (("code", "OK"), ("method", "AnalyzeImage"), ("service", "image-input")))
    before = scrape(url)
    with pytest.raises(grpc.RpcError):
        api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=b"nope"), timeout=10)
    api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60)
    after = scrape(url)
    assert after[key] == before.get(key, 0) + 1
    assert after[ok] == before.get(ok, 0) + 1
    assert after[("faceanalysis_grpc_requests_in_flight", (("method", "AnalyzeImage"), ("service", "image-input")))] == 0
