"""Process lifecycle: readiness waits for models, SIGTERM drains in-flight calls."""

from __future__ import annotations

import io
import signal
import threading
import time

import grpc
import pytest
from PIL import Image

from faceanalysis.cli.stack import LocalStack, health_status
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.support import image


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
