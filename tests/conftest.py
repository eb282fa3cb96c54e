"""Shared fixtures: real model files pulled from the local mirror, and a real local stack
(Redis plus the four services as processes on random localhost ports)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from faceanalysis.cli.stack import LocalStack
from faceanalysis.models.pull import pull
from faceanalysis.v1 import image_input_pb2_grpc

from tests.support import MIRROR, start_image_input  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Every model file, provisioned the way users do it: `models pull` from the mirror."""
    if not MIRROR.is_dir():
        pytest.fail(f"model mirror {MIRROR} is missing: set FACEANALYSIS_MODEL_MIRROR")
    directory = tmp_path_factory.mktemp("models")
    pull(directory, mirror_location=str(MIRROR), progress=False)
    return directory


@pytest.fixture(scope="session")
def local_stack(models_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("stack")
    stack = LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work, random_ports=True,
                       extra_env={"*": {"FACEANALYSIS_LOG_LEVEL": "INFO"}})  # each model at its own margin
    with stack:
        yield stack


@pytest.fixture(scope="session")
def api(local_stack):
    """A client of the public API of the shared stack."""
    channel = grpc.insecure_channel(local_stack.target("image-input"),
                                    options=[("grpc.max_send_message_length", 256 * 1024 * 1024),
                                             ("grpc.max_receive_message_length", 256 * 1024 * 1024)])
    yield image_input_pb2_grpc.FaceAnalysisStub(channel)
    channel.close()


@pytest.fixture
def spare_input(local_stack, tmp_path):
    """Starts extra image-input processes wired to the shared stack's peers: ours to kill,
    restart or load, with their own settings (`spare_input(FACEANALYSIS_X="1")`)."""
    started: list[LocalStack] = []

    def start(**env) -> LocalStack:
        stack = start_image_input(local_stack, tmp_path / f"image-input-{len(started)}", **env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()
