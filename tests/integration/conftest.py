"""Fixtures of the integration tests beyond the shared ones in tests/conftest.py."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from faceanalysis.v1 import image_input_pb2_grpc
from tests.integration.scripted import ScriptedImageInput


@pytest.fixture
def scripted():
    """Starts a ScriptedImageInput on a free port; returns its address."""
    servers = []

    def start(servicer: ScriptedImageInput) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        image_input_pb2_grpc.add_FaceAnalysisServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)
