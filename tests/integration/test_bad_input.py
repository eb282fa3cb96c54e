"""Bad input gets a clear status code and changes nothing; awkward-but-valid input is converted."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis

from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.hostile import ACCEPTED, HOSTILE
from tests.support import image

MiB = 1024 * 1024
ANALYZE = "/faceanalysis.v1.FaceAnalysis/AnalyzeImage"


def obama_bytes() -> bytes:
    return image("face_recognition/obama.jpg").read_bytes()


def state(local_stack) -> tuple[int, int]:
    client = redis.Redis.from_url(local_stack.redis.url)
    archive = local_stack.archive_dir
    files = len(list(archive.glob("*"))) if archive.exists() else 0
    return client.dbsize(), files


def all_alive(local_stack) -> bool:
    return all(p.poll() is None for p in local_stack.processes.values())


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_upload_is_refused_clearly_and_changes_nothing(api, local_stack, kind):
    make, code, words = HOSTILE[kind]
    before = state(local_stack)
    with pytest.raises(grpc.RpcError) as err:
        api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=make()), timeout=60)
    assert err.value.code() == code, err.value.details()
    assert words in err.value.details()
    assert state(local_stack) == before
    assert all_alive(local_stack)


def test_services_are_unharmed_after_the_hostile_uploads(api, local_stack):
    ok = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60)
    assert len(ok.result.faces) == 1
    assert all_alive(local_stack)


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_awkward_but_valid_upload_is_converted_not_refused(api, kind):
    make, fmt = ACCEPTED[kind]
    result = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=make(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60).result
    assert result.image.format == fmt
    assert len(result.faces) == 1
    assert result.faces[0].gender.label == common_pb2.GENDER_MAN


# --- attacks on the protocol rather than the picture --------------------------------------------
def raw_call(local_stack, payload: bytes, timeout: float = 60):
    """AnalyzeImage with `payload` as the serialized request, whatever it is."""
    with grpc.insecure_channel(local_stack.target("image-input"),
                               options=[("grpc.max_send_message_length", 128 * MiB)]) as channel:
        call = channel.unary_unary(ANALYZE, request_serializer=None, response_deserializer=None)
        return call(payload, timeout=timeout)


def test_malformed_protobuf_is_invalid_argument(local_stack):
    for payload in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"):
        with pytest.raises(grpc.RpcError) as err:
            raw_call(local_stack, payload)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in err.value.details()
    assert all_alive(local_stack)


def test_unknown_fields_are_ignored(local_stack):
    request = image_input_pb2.AnalyzeImageRequest(image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True))
    # Field 99 (varint 7) and field 100 (bytes): what a newer client might send.
    payload = request.SerializeToString() + b"\x98\x06\x07" + b"\xa2\x06\x03abc"
    reply = image_input_pb2.AnalyzeImageResponse.FromString(raw_call(local_stack, payload))
    assert len(reply.result.faces) == 1


def test_zero_byte_message_is_an_empty_image(local_stack):
    with pytest.raises(grpc.RpcError) as err:
        raw_call(local_stack, b"")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in err.value.details()


def test_63_mib_message_is_refused_before_it_is_read(local_stack):
    before = state(local_stack)
    payload = image_input_pb2.AnalyzeImageRequest(image=b"\xff\xd8\xff" + bytes(63 * MiB)).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        raw_call(local_stack, payload)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert state(local_stack) == before
    assert all_alive(local_stack)


def test_a_thousand_concurrent_empty_streams(api, local_stack):
    async def empty_streams(count: int) -> list[int]:
        async with grpc.aio.insecure_channel(local_stack.target("image-input")) as channel:
            stub = image_input_pb2_grpc.FaceAnalysisStub(channel)

            async def one() -> int:
                call = stub.AnalyzeImages()
                await call.done_writing()
                return len([answer async for answer in call])

            return await asyncio.gather(*(one() for _ in range(count)))

    answers = asyncio.run(empty_streams(1000))
    assert answers == [0] * 1000
    assert all_alive(local_stack)
    ok = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60)
    assert len(ok.result.faces) == 1


def test_stream_closed_by_the_client_halfway(api, local_stack):
    """The client writes two images and vanishes before reading an answer: the stream's work is
    dropped and the server goes on."""
    async def abandon() -> None:
        async with grpc.aio.insecure_channel(local_stack.target("image-input"),
                                             options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
            call = image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImages()
            for _ in range(2):
                await call.write(image_input_pb2.AnalyzeImageRequest(image=obama_bytes(),
                                                                     options=common_pb2.AnalysisOptions(no_store=True)))
            call.cancel()

    asyncio.run(abandon())
    assert all_alive(local_stack)
    ok = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
        image=obama_bytes(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60)
    assert len(ok.result.faces) == 1


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


@pytest.mark.parametrize("size", [(40000, 16), (16, 40000), (20000, 33)])
def test_extreme_aspect_ratios_never_fail_inside_the_server(api, size):
    """Valid images of shapes a detector cannot take whole: an answer or INVALID_ARGUMENT, never INTERNAL."""
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buf, "PNG")
    try:
        result = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
            image=buf.getvalue(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60).result
        assert (result.image.width, result.image.height) == size
        assert len(result.faces) == 0
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


def large_photo_png() -> bytes:
    """Obama's photo scaled to 4000 px wide: seconds of work, so a cancel lands while it runs."""
    import io

    from PIL import Image

    with Image.open(image("face_recognition/obama.jpg")) as img:
        big = img.convert("RGB").resize((4000, round(4000 * img.height / img.width)))
    buf = io.BytesIO()
    big.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_streams_cancelled_mid_work_are_counted_as_cancelled_and_leak_nothing(local_stack):
    """A client that cancels while a photo is being worked on: CANCELLED in the metrics, and the
    pod's work gauge (the autoscaling signal) back to zero.

    (A cancel that lands after every answer was delivered and while the server waits for the next
    request reaches grpc.aio's handler as a plain end of requests, so that stream may count as OK;
    this test cancels while work is outstanding.)
    """
    url = local_stack.metrics_urls["image-input"]
    key = ("faceanalysis_grpc_requests_total",
           (("code", "CANCELLED"), ("method", "AnalyzeImages"), ("service", "image-input")))
    work = ("faceanalysis_work_in_flight", (("service", "image-input"),))
    options = common_pb2.AnalysisOptions(no_store=True)
    big = large_photo_png()

    async def cancel_mid_work() -> None:
        async with grpc.aio.insecure_channel(local_stack.target("image-input")) as channel:
            call = image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImages()
            await call.write(image_input_pb2.AnalyzeImageRequest(image=obama_bytes(), options=options))
            await call.read()
            await call.write(image_input_pb2.AnalyzeImageRequest(image=big, options=options))
            deadline = time.monotonic() + 10
            while scrape(url).get(work, 0) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert scrape(url).get(work, 0) >= 1, "the large photo was never admitted"
            call.cancel()

    before = scrape(url).get(key, 0)
    asyncio.run(cancel_mid_work())
    deadline = time.monotonic() + 10
    while (scrape(url).get(key, 0) == before or scrape(url).get(work, 0) != 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = scrape(url)
    assert after.get(key, 0) == before + 1
    assert after.get(work, 0) == 0
