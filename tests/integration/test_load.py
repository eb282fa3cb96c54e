"""Serving under load, the way production fails: huge photos, idle and abandoned streams, busy
pods, streams that outlive their connection. Real processes, real sockets, real models."""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from pathlib import Path

import grpc
import numpy as np
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.support import ROOT, image

MiB = 1024 * 1024
NO_STORE = common_pb2.AnalysisOptions(no_store=True)
BIG = 256 * MiB
CLIENT_OPTIONS = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]


# --- helpers ---------------------------------------------------------------------------------
def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, the peak resident set size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def chart_memory_limit_mib(service: str) -> int:
    values = yaml.safe_load((ROOT / f"charts/faceanalysis/charts/{service}/values.yaml").read_text())
    limit = str(values["resources"]["limits"]["memory"])
    units = {"Mi": 1, "Gi": 1024}
    return int(float(limit[:-2]) * units[limit[-2:]])


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo_on_canvas(size: tuple[int, int], mode: str) -> Image.Image:
    """A flat canvas of `size` with a real photo (6 faces) in one corner: huge, yet small on disk."""
    canvas = Image.new(mode, size, 0 if mode.startswith("I") else None)
    face = Image.open(image("misc/t1.jpg"))
    if mode == "I;16":
        face = Image.fromarray((np.asarray(face.convert("L"), dtype=np.uint16) * 257))
    else:
        face = face.convert(mode)
    canvas.paste(face, (0, 0))
    return canvas


def at_the_caps() -> dict[str, bytes]:
    """The largest inputs the default caps accept (40 MP at 3 bytes per decoded pixel)."""
    t1 = Image.open(image("misc/t1.jpg")).convert("RGB")
    return {
        # A real photo scaled up: 40 MP of detail, not a flat canvas.
        "40 MP JPEG": encode(t1.resize((7296, 5472)), "JPEG", quality=85),
        "39.9 MP 16-bit PNG": encode(photo_on_canvas((7300, 5465), "I;16"), "PNG"),
        # 4 bytes per pixel: 30 MP of RGBA costs what 40 MP of RGB does.
        "30 MP RGBA PNG": encode(photo_on_canvas((6320, 4740), "RGBA"), "PNG"),
    }


def analyze_request(data: bytes, **options) -> image_input_pb2.AnalyzeImageRequest:
    return image_input_pb2.AnalyzeImageRequest(image=data, options=common_pb2.AnalysisOptions(**options))


def small_photos(count: int) -> list[bytes]:
    """`count` distinct small JPEGs with one face each (distinct bytes, so no cache answers)."""
    base = Image.open(image("face_recognition/obama.jpg")).convert("RGB")
    base = base.resize((base.width // 2, base.height // 2))
    return [encode(base, "JPEG", quality=60 + i % 35, comment=str(i).encode()) for i in range(count)]


def unary_latency(stub, data: bytes, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stub.AnalyzeImage(analyze_request(data, no_store=True), timeout=60)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- memory ----------------------------------------------------------------------------------
def test_peak_memory_at_the_caps_stays_under_the_chart_limits(local_stack):
    """Three maximal images at once through image-input and face-landmark: the peak RSS of each
    stays under the memory limit its chart sets (a pod over it is OOM-killed)."""
    inputs = at_the_caps()
    pids = {n: local_stack.processes[n].pid for n in ("image-input", "face-landmark")}
    for pid in pids.values():
        reset_peak_rss(pid)
    channel = grpc.insecure_channel(local_stack.target("image-input"), options=CLIENT_OPTIONS)
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    futures = {name: stub.AnalyzeImage.future(analyze_request(data, no_store=True), timeout=240)
               for name, data in inputs.items()}
    faces = {name: len(f.result().result.faces) for name, f in futures.items()}
    channel.close()
    peaks = {n: proc_kib(pid, "VmHWM") // 1024 for n, pid in pids.items()}
    limits = {n: chart_memory_limit_mib(n) for n in pids}
    print(f"inputs: { {n: f'{len(d) / MiB:.1f} MiB' for n, d in inputs.items()} }")
    print(f"peak RSS MiB: {peaks}; chart limits MiB: {limits}")
    # Every image is analysed and all six of t1's faces found (grey levels alone included: the full-resolution
    # re-check of borderline candidates finds the smallest face that a single pass scored just under 0.9).
    assert faces == {"40 MP JPEG": 6, "39.9 MP 16-bit PNG": 6, "30 MP RGBA PNG": 6}, faces
    for name in pids:
        assert peaks[name] < limits[name], f"{name} peaked at {peaks[name]} MiB, over its {limits[name]} MiB limit"


# --- idle, abandoned and long streams -------------------------------------------------------
def test_idle_streams_do_not_slow_unary_calls(spare_input):
    stack = spare_input()
    target = stack.target("image-input")
    channel = grpc.insecure_channel(target, options=CLIENT_OPTIONS)
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    photo = image("face_recognition/obama.jpg").read_bytes()
    unary_latency(stub, photo, 2)  # warm
    alone = unary_latency(stub, photo)

    async def with_idle_streams() -> float:
        async with grpc.aio.insecure_channel(target) as aio_channel:
            aio_stub = image_input_pb2_grpc.FaceAnalysisStub(aio_channel)
            streams = [aio_stub.AnalyzeImages() for _ in range(100)]  # opened, never written to
            await asyncio.gather(*(s.wait_for_connection() for s in streams))
            latency = await asyncio.get_running_loop().run_in_executor(None, unary_latency, stub, photo)
            for s in streams:
                s.cancel()
            return latency

    crowded = asyncio.run(with_idle_streams())
    channel.close()
    print(f"unary median alone {alone * 1000:.0f} ms, with 100 idle streams {crowded * 1000:.0f} ms")
    assert crowded < alone * 1.5 + 0.1


def test_cancelled_streams_stop_their_work_and_give_memory_back(spare_input, local_stack):
    stack = spare_input()
    pid = stack.processes["image-input"].pid
    target = stack.target("image-input")
    photos = small_photos(10)
    store = redis.Redis.from_url(local_stack.redis.url)

    def stored() -> int:
        return sum(1 for _ in store.scan_iter("fa:result:*", count=1000))

    async def stream_then_cancel(stub, answers_wanted: int) -> int:
        call = stub.AnalyzeImages()
        for data in photos:
            await call.write(analyze_request(data, skip_cache=True))
        got = 0
        async for _ in call:
            got += 1
            if got == answers_wanted:
                call.cancel()
                break
        return got

    async def run(streams: int) -> None:
        async with grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
            stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
            await asyncio.gather(*(stream_then_cancel(stub, 2) for _ in range(streams)))

    asyncio.run(run(2))  # warm-up
    time.sleep(1)
    rss_before = proc_kib(pid, "VmRSS")
    asyncio.run(run(50))
    time.sleep(2)  # calls that were already inside data-storage when the client left may land
    after_cancel = stored()
    time.sleep(5)
    rss_after = proc_kib(pid, "VmRSS")
    print(f"results stored: {after_cancel} then {stored()}; image-input RSS {rss_before} -> {rss_after} KiB")
    assert stored() == after_cancel, "no result of a cancelled stream is stored after the cancel"
    assert rss_after <= rss_before * 1.2


def test_stream_longer_than_the_connection_age_completes_with_a_long_grace(spare_input):
    age = 2.0
    stack = spare_input(FACEANALYSIS_MAX_CONNECTION_AGE_SECONDS=str(age),
                        FACEANALYSIS_MAX_CONNECTION_AGE_GRACE_SECONDS="60")
    channel = grpc.insecure_channel(stack.target("image-input"), options=CLIENT_OPTIONS)
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    photos = small_photos(12)

    def slow_requests():
        for data in photos:
            yield analyze_request(data, no_store=True)
            time.sleep(0.6)  # 12 x 0.6 s: well over 3x the connection age

    start = time.monotonic()
    answers = list(stub.AnalyzeImages(slow_requests(), timeout=120))
    took = time.monotonic() - start
    channel.close()
    assert took > 3 * age
    assert sorted(a.index for a in answers) == list(range(len(photos)))
    assert all(len(a.result.faces) == 1 for a in answers), [a.error for a in answers if a.HasField("error")]


# --- busy pods ---------------------------------------------------------------------------------
def test_health_answers_fast_with_16_calls_in_flight(local_stack):
    # 24 MP each: decoding alone keeps face-landmark busy for seconds, longer than the checks take.
    photo = encode(Image.open(image("misc/t1.jpg")).convert("RGB").resize((6000, 4000)), "JPEG", quality=90)
    channel = grpc.insecure_channel(local_stack.target("image-input"), options=CLIENT_OPTIONS)
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    calls = [stub.AnalyzeImage.future(analyze_request(photo, no_store=True), timeout=120) for _ in range(16)]
    time.sleep(0.5)
    slowest = {}
    for name in ("image-input", "face-landmark", "face-attributes"):
        with grpc.insecure_channel(local_stack.target(name)) as health_channel:
            health = health_pb2_grpc.HealthStub(health_channel)
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connect
            times = []
            for _ in range(10):
                start = time.perf_counter()
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                times.append(time.perf_counter() - start)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                time.sleep(0.05)
            slowest[name] = max(times)
    in_flight = sum(not c.done() for c in calls)
    outcomes = []
    for c in calls:
        try:
            outcomes.append(len(c.result().result.faces))
        except grpc.RpcError as err:
            outcomes.append(err.code().name)
    channel.close()
    print(f"slowest health Check with calls in flight: { {n: f'{t * 1000:.1f} ms' for n, t in slowest.items()} }; "
          f"{in_flight} calls still in flight after the checks; outcomes {outcomes}")
    assert in_flight > 0, "the checks ran while the pods were busy"
    # Well inside the probes' 3 s timeout (chart: probes.readiness.timeoutSeconds). On 2 cores,
    # face-landmark's slowest check varied from 10 to 240 ms from run to run: its workers hold the
    # GIL in short stretches (Pillow allocating and packing a 24 MP image, dlib's predictor), and
    # the event loop can lose the GIL to them several times in a row. 100 ms, the bar before,
    # came within 7 ms of failing (93) in 1 run of 4 even before YuNet moved to ONNX Runtime.
    assert all(t < 0.5 for t in slowest.values()), slowest
    # Busy pods answer or say they are busy; nothing fails otherwise.
    assert set(outcomes) <= {6, "RESOURCE_EXHAUSTED"}
