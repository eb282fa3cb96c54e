"""Process lifecycle: readiness waits for models, SIGTERM drains in-flight calls."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from PIL import Image

from faceanalysis.cli.stack import LocalStack, health_status
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.support import distinct_photos, image

FA = [sys.executable, "-m", "faceanalysis.cli.main"]


@pytest.fixture
def second_input(spare_input):
    return spare_input(FACEANALYSIS_SHUTDOWN_GRACE_SECONDS="20")


def big_photo() -> bytes:
    """t1.jpg scaled up 4x: slow enough (seconds) to still be in flight when SIGTERM lands."""
    img = Image.open(image("misc/t1.jpg"))
    buf = io.BytesIO()
    img.resize((img.width * 4, img.height * 4)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_sigterm_finishes_in_flight_call(second_input):
    channel = grpc.insecure_channel(second_input.target("image-input"))
    api = image_input_pb2_grpc.FaceAnalysisStub(channel)
    outcome = {}

    def call():
        try:
            outcome["result"] = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(
                image=big_photo(), options=common_pb2.AnalysisOptions(no_store=True)), timeout=60).result
        except grpc.RpcError as err:
            outcome["error"] = err

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(1.0)  # the call is now inside face-landmark
    process = second_input.processes["image-input"]
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # Draining: new calls are refused while the old one finishes.
    with pytest.raises(grpc.RpcError) as refused:
        api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=image("misc/astronaut.png").read_bytes()),
                         timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert len(outcome["result"].faces) == 6
    assert process.wait(30) == 0
    channel.close()


def test_missing_models_keep_service_not_serving_and_say_how_to_fix(tmp_path):
    stack = LocalStack(models_dir=tmp_path / "empty-models", archive_dir=tmp_path / "archive", workdir=tmp_path,
                       random_ports=True)
    try:
        for name in ("face-landmark", "face-attributes"):
            stack.start_service(name)
        deadline = time.monotonic() + 30
        logs = {}
        while time.monotonic() < deadline:
            logs = {n: (stack.log_dir / f"{n}.log").read_text() for n in ("face-landmark", "face-attributes")}
            if all("not ready" in text for text in logs.values()):
                break
            time.sleep(0.3)
        assert "face_detection_yunet_2023mar.onnx is missing" in logs["face-landmark"]
        assert "faceanalysis models pull --only face-landmark" in logs["face-landmark"]
        assert "age_model_weights.onnx is missing" in logs["face-attributes"]
        assert "FACEANALYSIS_MODEL_MIRROR" in logs["face-attributes"]
        for name in ("face-landmark", "face-attributes"):
            assert health_status(stack.target(name)) == "NOT_SERVING"
            assert stack.processes[name].poll() is None, "the process stays up so probes can report it"
    finally:
        stack.stop()


def test_sigterm_during_a_stream_the_client_resumes_on_the_new_process(spare_input, tmp_path):
    """A rollout: image-input gets SIGTERM while `faceanalysis analyze` streams 50 photos. The
    stream stops taking images, answers those in flight, and ends with UNAVAILABLE; the CLI
    reconnects to the replacement process and sends only what got no answer. Nothing is lost,
    nothing is analysed twice."""
    photos = tmp_path / "photos"
    distinct_photos(photos, 50)
    stack = spare_input(FACEANALYSIS_SHUTDOWN_GRACE_SECONDS="20")
    out = tmp_path / "json"
    cli = subprocess.Popen([*FA, "analyze", str(photos), "--target", stack.target("image-input"), "--out", str(out),
                            "--concurrency", "2", "--retry-seconds", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.json"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    old = stack.processes["image-input"]
    old.send_signal(signal.SIGTERM)
    assert old.wait(30) == 0, "the old process drained and exited cleanly"
    answered_by_old = len(list(out.glob("*.json")))
    stack.restart_service("image-input")  # the replacement pod, same address
    stdout, stderr = cli.communicate(timeout=180)
    assert cli.returncode == 0, stderr
    assert "50 of 50 images analyzed" in stdout
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(results) == 50
    assert answered_by_old < 50, "the SIGTERM landed mid-run"
    assert "draining" in (stack.log_dir / "image-input.log").read_text()
    assert all(r["stored"] for r in results)
    # Every image was analysed and stored once: the archive holds one result per photo.
    shas = {r["image"]["sha256"] for r in results}
    archived = [json.loads(f.read_text())["image"]["sha256"] for f in stack.archive_dir.glob("*.json")]
    assert len(shas) == 50
    assert sorted(a for a in archived if a in shas) == sorted(shas)
