"""TLS on every port of a real local stack, mTLS between the services, and the clients that reach it.

One stack for the module: every service serves TLS with a certificate from a throwaway CA made
here; face-landmark, face-attributes and data-storage also demand a client certificate from that
CA (mTLS), so image-input's every call to them goes over mTLS. image-input, the public API, asks
for no client certificate: clients there are the CLI, the Python client and an edge proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from faceanalysis.cli.stack import LocalStack, health_status
from faceanalysis.client import AnalysisError, Client, InsecureWarning
from faceanalysis.v1 import face_attributes_pb2, face_attributes_pb2_grpc, image_input_pb2, image_input_pb2_grpc
from tests.certs import CA
from tests.support import image

FA = [sys.executable, "-m", "faceanalysis.cli.main"]
PEERS = ("face-landmark", "face-attributes", "data-storage")
T1_FACES = 6  # misc/t1.jpg, as tests/integration/test_cli.py counts them


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = CA(folder)
    return {"ca": ca, "service": ca.issue("service"), "client": ca.issue("client"),
            "stranger": CA(folder / "other", "stranger CA")}


@pytest.fixture(scope="module")
def tls_stack(models_dir, pki, tmp_path_factory):
    work = tmp_path_factory.mktemp("tls-stack")
    service, ca = pki["service"], pki["ca"]
    everyone = {"FACEANALYSIS_TLS_CERT_FILE": str(service.cert), "FACEANALYSIS_TLS_KEY_FILE": str(service.key), "FACEANALYSIS_PEER_CA_FILE": str(ca.path)}
    mtls = {"FACEANALYSIS_TLS_CLIENT_CA_FILE": str(ca.path)}
    stack = LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work, random_ports=True,
                       extra_env={"*": everyone, **{name: mtls for name in PEERS}})
    with stack:
        yield stack


def fa(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FA, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_analyze_verifies_the_server_against_a_ca(tls_stack, pki, tmp_path):
    """The whole pipeline answers: image-input reached its three peers over mTLS."""
    proc = fa("analyze", str(image("misc/t1.jpg")), "--target", tls_stack.target("image-input"),
              "--tls", "--ca", str(pki["ca"].path), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"1 of 1 images analyzed, {T1_FACES} faces" in proc.stdout
    assert len(json.loads((tmp_path / "t1.json").read_text())["faces"]) == T1_FACES
    for name in PEERS:
        assert '"tls": "mtls"' in (tls_stack.log_dir / f"{name}.log").read_text()


def test_cli_insecure_works_and_warns(tls_stack, tmp_path):
    proc = fa("analyze", str(image("face_recognition/obama.jpg")), "--target", tls_stack.target("image-input"),
              "--insecure", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 of 1 images analyzed, 1 faces" in proc.stdout
    assert f"warning: --insecure: not verifying the certificate of {tls_stack.target('image-input')}" in proc.stderr


def test_cli_health_over_tls_and_a_ca_it_does_not_trust(tls_stack, pki):
    target = tls_stack.target("image-input")
    ok = fa("health", "--target", target, "--ca", str(pki["ca"].path), timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING", ok.stderr
    wrong = fa("health", "--target", target, "--ca", str(pki["stranger"].path), "--timeout", "2", timeout=30)
    assert wrong.returncode == 1 and wrong.stdout.strip() == "UNREACHABLE"
    assert "UNAVAILABLE" in wrong.stderr


def test_plaintext_client_to_a_tls_port_is_unavailable(tls_stack):
    with grpc.insecure_channel(tls_stack.target("image-input")) as channel:
        with pytest.raises(grpc.RpcError) as err:
            image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImage(
                image_input_pb2.AnalyzeImageRequest(image=b"x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert health_status(tls_stack.target("image-input"), timeout=2) == "UNREACHABLE"


def test_mtls_refuses_a_client_without_a_certificate(tls_stack, pki):
    ca, client = pki["ca"], pki["client"]
    target = tls_stack.target("face-attributes")
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca.path.read_bytes())
    with grpc.secure_channel(target, anonymous) as channel:
        with pytest.raises(grpc.RpcError) as err:
            face_attributes_pb2_grpc.FaceAttributesStub(channel).PredictAttributes(
                face_attributes_pb2.PredictAttributesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The same call with a certificate from the CA gets through the handshake to the service.
    known = grpc.ssl_channel_credentials(ca.path.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())
    with grpc.secure_channel(target, known) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_port_is_plaintext_and_serves_only_health(tls_stack):
    for name in ("image-input", *PEERS):
        assert name in tls_stack.health_ports
        assert health_status(tls_stack.health_target(name), timeout=2) == "SERVING"
    with grpc.insecure_channel(tls_stack.health_target("image-input")) as channel:
        with pytest.raises(grpc.RpcError) as err:
            image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImage(
                image_input_pb2.AnalyzeImageRequest(image=b"x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_python_client_round_trip(tls_stack, pki):
    photo = image("misc/t1.jpg")
    with Client(tls_stack.target("image-input"), ca=pki["ca"].path, timeout=60) as client:
        assert client.health() == "SERVING"
        result = client.analyze(photo)
        assert len(result.faces) == T1_FACES and result.analysis_id
        assert len(client.analyze(photo.read_bytes()).faces) == T1_FACES
        with pytest.raises(AnalysisError) as err:
            client.analyze(b"\xff\xd8\xff\xe0 not a jpeg")
    assert err.value.code == "INVALID_ARGUMENT" and err.value.message
    assert str(err.value).startswith("INVALID_ARGUMENT: ")


def test_python_client_authority_and_insecure(tls_stack, pki):
    target = tls_stack.target("image-input")
    with Client(target, ca=pki["ca"].path, authority="localhost", timeout=10) as client:
        assert client.health() == "SERVING"  # the certificate carries localhost
    with Client(target, ca=pki["ca"].path, authority="faces.example.com", timeout=10) as client:
        with pytest.raises(AnalysisError) as err:
            client.health()
    assert err.value.code == "UNAVAILABLE"
    for authority in (None, "localhost"):  # localhost: a name the certificate carries, so it is asked for
        with pytest.warns(InsecureWarning, match="not verifying the certificate"):
            client = Client(target, insecure=True, authority=authority, timeout=10)
        with client:
            assert client.health() == "SERVING"


def test_api_key_goes_with_every_call_as_bearer_metadata():
    """Unary and streaming calls alike; checked on a plain in-process server that records what arrives."""
    seen = []

    class Record(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            seen.append(dict(details.invocation_metadata).get("authorization"))
            return continuation(details)

    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[Record()])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", api_key="fa_test_key", timeout=5) as client:
            assert client.health() == "SERVING"
            with pytest.raises(AnalysisError) as err:  # no FaceAnalysis here: the key still went along
                client.analyze(b"x")
        assert err.value.code == "UNIMPLEMENTED" and "fa_test_key" not in str(err.value)
        assert "fa_test_key" not in repr(client.connection)
        with client.connection.channel() as channel:  # the CLI's streams go through the same channel
            stream = image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImages(
                iter([image_input_pb2.AnalyzeImageRequest(image=b"x")]), timeout=5)
            with pytest.raises(grpc.RpcError):
                list(stream)
    finally:
        server.stop(0)
    assert seen == ["Bearer fa_test_key"] * 3
