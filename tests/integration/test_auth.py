"""API keys and tenants against a real stack.

An image-input started with FACEANALYSIS_API_KEYS_FILE, wired to the shared stack's face-landmark,
face-attributes and data-storage, so tenants `tenant-a` and `tenant-b` share one Redis and one
archive with the shared stack's own `default` tenant (API keys off there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from faceanalysis.cli import connect
from faceanalysis.runtime import auth
from faceanalysis.v1 import (
    common_pb2,
    data_storage_pb2,
    data_storage_pb2_grpc,
    image_input_pb2,
    image_input_pb2_grpc,
)
from tests.support import image, start_image_input

FA = [sys.executable, "-m", "faceanalysis.cli.main"]
TENANT_A, TENANT_B = "tenant-a", "tenant-b"
# Every key this module makes has this shape; none may show up in any log.
ANY_KEY = re.compile(r"fa_[A-Za-z0-9]{40}")


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"a": auth.new_key(), "b": auth.new_key(), "a-no-delete": auth.new_key()}


@pytest.fixture(scope="module")
def secured(local_stack, tmp_path_factory, keys):
    work = tmp_path_factory.mktemp("auth")
    key_file = work / "api-keys"
    key_file.write_text("\n".join([
        "# written by tests/integration/test_auth.py",
        auth.format_line(auth.hash_key(keys["a"]), TENANT_A),
        auth.format_line(auth.hash_key(keys["b"]), TENANT_B),
        "",
        auth.format_line(auth.hash_key(keys["a-no-delete"]), TENANT_A, frozenset({"analyze", "read"})),
    ]) + "\n")
    stack = start_image_input(local_stack, work / "image-input", FACEANALYSIS_API_KEYS_FILE=str(key_file))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def channel(secured):
    with grpc.insecure_channel(secured.target("image-input")) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return image_input_pb2_grpc.FaceAnalysisStub(channel)


def auth_header(key: str | None) -> tuple:
    return (("authorization", f"Bearer {key}"),) if key else ()


def analyze(stub, key: str | None, relative: str, **options) -> common_pb2.AnalysisResult:
    request = image_input_pb2.AnalyzeImageRequest(image=image(relative).read_bytes(),
                                                  options=common_pb2.AnalysisOptions(**options))
    return stub.AnalyzeImage(request, metadata=auth_header(key), timeout=120).result


def get(stub, key: str | None, analysis_id: str) -> common_pb2.AnalysisResult:
    request = image_input_pb2.GetAnalysisRequest(analysis_id=analysis_id)
    return stub.GetAnalysis(request, metadata=auth_header(key), timeout=10).result


def listed(stub, key: str | None) -> set[str]:
    found = stub.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_size=500), metadata=auth_header(key),
                              timeout=10)
    return {a.analysis_id for a in found.analyses}


def delete(stub, key: str | None, analysis_id: str) -> bool:
    request = image_input_pb2.DeleteAnalysisRequest(analysis_id=analysis_id)
    return stub.DeleteAnalysis(request, metadata=auth_header(key), timeout=10).deleted


def stream(stub, key: str | None, relative: str) -> list[image_input_pb2.AnalyzeImagesResponse]:
    request = image_input_pb2.AnalyzeImageRequest(image=image(relative).read_bytes(), client_ref=relative)
    return list(stub.AnalyzeImages(iter([request]), metadata=auth_header(key), timeout=120))


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def not_found_message(stub, key: str) -> str:
    """What GetAnalysis says about an id that exists nowhere, with the id left out."""
    missing = uuid.uuid4().hex
    return refusal(lambda: get(stub, key, missing)).details().replace(missing, "<id>")


def test_health_and_reflection_need_no_key(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "faceanalysis.v1.FaceAnalysis"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=5)
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "faceanalysis.v1.FaceAnalysis" in names


def test_no_key_or_a_wrong_key_is_unauthenticated(stub, keys):
    some_id = uuid.uuid4().hex
    calls = {
        "AnalyzeImage": lambda key: analyze(stub, key, "face_recognition/obama_small.jpg"),
        "AnalyzeImages": lambda key: stream(stub, key, "face_recognition/obama_small.jpg"),
        "GetAnalysis": lambda key: get(stub, key, some_id),
        "ListAnalyses": lambda key: listed(stub, key),
        "DeleteAnalysis": lambda key: delete(stub, key, some_id),
    }
    wrong = auth.new_key()
    for method, call in calls.items():
        missing = refusal(lambda: call(None))
        assert (missing.code(), missing.details()) == (grpc.StatusCode.UNAUTHENTICATED, auth.MISSING), method
        unknown = refusal(lambda: call(wrong))
        assert (unknown.code(), unknown.details()) == (grpc.StatusCode.UNAUTHENTICATED, auth.UNKNOWN), method
    # The stored hash is not a key, and a key without `Bearer` is refused without echoing it.
    hashed = refusal(lambda: listed(stub, auth.hash_key(keys["a"])))
    assert (hashed.code(), hashed.details()) == (grpc.StatusCode.UNAUTHENTICATED, auth.UNKNOWN)
    plain = refusal(lambda: stub.ListAnalyses(image_input_pb2.ListAnalysesRequest(),
                                              metadata=(("authorization", keys["a"]),), timeout=10))
    assert plain.code() == grpc.StatusCode.UNAUTHENTICATED and keys["a"] not in plain.details()


def cli_analyze(secured, relative: str, *flags: str, env_key: str | None = None) -> subprocess.CompletedProcess:
    """`faceanalysis analyze --format jsonl` as a user runs it against the keyed image-input, with
    `env_key` (if any) in FACEANALYSIS_API_KEY. The shell's own connection variables are dropped,
    so only what the test passes reaches the CLI."""
    env = {k: v for k, v in os.environ.items() if k not in connect.VARIABLES}
    if env_key:
        env[connect.ENV_KEY] = env_key
    return subprocess.run([*FA, "analyze", str(image(relative)), "--target", secured.target("image-input"),
                           "--format", "jsonl", "--skip-cache", *flags],
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_sends_the_key_from_the_flag_or_the_environment(secured, keys):
    for how, proc in {
        "--api-key": cli_analyze(secured, "face_recognition/obama.jpg", "--api-key", keys["a"]),
        connect.ENV_KEY: cli_analyze(secured, "face_recognition/obama.jpg", env_key=keys["a"]),
    }.items():
        assert proc.returncode == 0, f"{how}: {proc.stderr}"
        [record] = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(record["faces"]) == 1 and record["faces"][0]["gender"]["label"] == "GENDER_MAN", how
        assert keys["a"] not in proc.stdout + proc.stderr, how


def test_the_cli_without_a_valid_key_says_so_and_stops(secured, keys):
    """No retrying for --retry-seconds: a refused key is the user's to fix, said in one line."""
    wrong = auth.new_key()
    for how, proc, reason in (
        ("no key", cli_analyze(secured, "face_recognition/obama.jpg"), auth.MISSING),
        ("a wrong key", cli_analyze(secured, "face_recognition/obama.jpg", env_key=wrong), auth.UNKNOWN),
    ):
        assert proc.returncode == 2, f"{how}: {proc.stderr}"
        assert proc.stdout == "", how  # no records, not even a failed one
        assert f"UNAUTHENTICATED: {reason}" in proc.stderr, f"{how}: {proc.stderr}"
        assert "giving up with 1 of 1 images left" in proc.stderr and "waiting for" not in proc.stderr, how
        assert "hint: pass the key with --api-key, or better FACEANALYSIS_API_KEY" in proc.stderr, how
        assert "Traceback" not in proc.stderr and wrong not in proc.stderr, f"{how}: {proc.stderr}"


def test_a_key_without_the_delete_scope_may_analyze_and_read_but_not_delete(stub, keys):
    result = analyze(stub, keys["a-no-delete"], "face_recognition/obama_small.jpg", skip_cache=True)
    assert result.stored
    assert get(stub, keys["a-no-delete"], result.analysis_id).analysis_id == result.analysis_id
    denied = refusal(lambda: delete(stub, keys["a-no-delete"], result.analysis_id))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details() == "DeleteAnalysis needs an API key with the `delete` scope; this key has: analyze,read"
    assert get(stub, keys["a"], result.analysis_id).analysis_id == result.analysis_id  # still there
    assert delete(stub, keys["a"], result.analysis_id)  # the same tenant's full key may


def test_tenants_see_only_their_own_analyses(stub, api, keys):
    photo = "deepface/img5.jpg"
    of_b = analyze(stub, keys["b"], photo)
    assert of_b.stored and not of_b.cached

    # The same bytes from A: a fresh analysis of A's own, never B's id from the cache ...
    of_a = analyze(stub, keys["a"], photo)
    assert of_a.stored and not of_a.cached and of_a.analysis_id != of_b.analysis_id
    assert of_a.image.sha256 == of_b.image.sha256
    # ... while A's own cache works, and so does B's.
    assert analyze(stub, keys["a"], photo).analysis_id == of_a.analysis_id
    again = analyze(stub, keys["b"], photo)
    assert again.cached and again.analysis_id == of_b.analysis_id

    # Get: another tenant's id reads exactly like a missing one.
    hidden = refusal(lambda: get(stub, keys["a"], of_b.analysis_id))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.details().replace(of_b.analysis_id, "<id>") == not_found_message(stub, keys["a"])
    assert get(stub, keys["b"], of_b.analysis_id).analysis_id == of_b.analysis_id

    # List, streams included: each tenant sees only its own.
    [streamed] = stream(stub, keys["a"], "deepface/img12.jpg")
    assert streamed.WhichOneof("outcome") == "result" and streamed.result.stored
    mine_a, mine_b = listed(stub, keys["a"]), listed(stub, keys["b"])
    assert {of_a.analysis_id, streamed.result.analysis_id} <= mine_a and of_b.analysis_id not in mine_a
    assert of_b.analysis_id in mine_b and not {of_a.analysis_id, streamed.result.analysis_id} & mine_b

    # The stack without keys is tenant `default`: it sees neither.
    assert refusal(lambda: get(api, None, of_b.analysis_id)).code() == grpc.StatusCode.NOT_FOUND
    assert not {of_a.analysis_id, of_b.analysis_id} & listed(api, None)

    # Delete: A cannot remove B's analysis (the answer is that of a missing id); B can.
    assert not delete(stub, keys["a"], of_b.analysis_id)
    assert not delete(stub, keys["a"], uuid.uuid4().hex)
    assert get(stub, keys["b"], of_b.analysis_id).analysis_id == of_b.analysis_id
    assert delete(stub, keys["b"], of_b.analysis_id)
    assert refusal(lambda: get(stub, keys["b"], of_b.analysis_id)).code() == grpc.StatusCode.NOT_FOUND


def test_archived_results_stay_apart_after_redis_forgets_them(stub, keys, local_stack):
    of_b = analyze(stub, keys["b"], "face_recognition/biden.jpg", skip_cache=True)
    archived = local_stack.archive_dir / "tenants" / TENANT_B / f"{of_b.analysis_id}.json"
    assert archived.is_file() and not (local_stack.archive_dir / f"{of_b.analysis_id}.json").exists()

    # What the TTL does: the Redis entry is gone, only the archive holds the result.
    client = redis.Redis.from_url(local_stack.redis.url)
    assert client.delete(f"fa:tenant:{TENANT_B}:result:{of_b.analysis_id}") == 1

    assert get(stub, keys["b"], of_b.analysis_id).analysis_id == of_b.analysis_id  # from the archive
    hidden = refusal(lambda: get(stub, keys["a"], of_b.analysis_id))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.details().replace(of_b.analysis_id, "<id>") == not_found_message(stub, keys["a"])
    assert not delete(stub, keys["a"], of_b.analysis_id) and archived.is_file()


def test_data_storage_refuses_a_call_without_a_tenant(local_stack):
    with grpc.insecure_channel(local_stack.target("data-storage")) as channel:
        storage = data_storage_pb2_grpc.DataStorageStub(channel)
        for tenant in ("", "../default", "Tenant-A"):
            err = refusal(lambda: storage.GetResult(
                data_storage_pb2.GetResultRequest(analysis_id=uuid.uuid4().hex, tenant=tenant), timeout=10))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "tenant must be" in err.details()
        err = refusal(lambda: storage.ListResults(data_storage_pb2.ListResultsRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def log_files(*stacks) -> dict:
    return {path: path.read_text(errors="replace") for stack in stacks for path in stack.log_dir.glob("*.log")}


def test_keys_never_reach_a_log(stub, keys, secured, local_stack):
    wrong = auth.new_key()
    analyze(stub, keys["a"], "misc/Tom_Hanks_54745.png", skip_cache=True)
    refusal(lambda: listed(stub, wrong))
    refusal(lambda: delete(stub, keys["a-no-delete"], uuid.uuid4().hex))
    # The refusals are logged (so the logs below are the ones being written) ...
    deadline = time.monotonic() + 10
    while "unknown API key" not in (text := (secured.log_dir / "image-input.log").read_text()) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert '"code": "UNAUTHENTICATED"' in text and '"code": "PERMISSION_DENIED"' in text
    assert '"msg": "API keys on"' in text
    # ... and no key of this module, nor anything shaped like one, is in any log of either stack.
    logs = log_files(secured, local_stack)
    assert {p.name for p in logs} >= {"image-input.log", "data-storage.log", "face-landmark.log"}
    for path, text in logs.items():
        assert not ANY_KEY.search(text), f"{path} holds an API key"
        for key in (*keys.values(), wrong):
            assert key[3:] not in text, f"{path} holds part of an API key"


def test_a_bad_key_file_stops_image_input_with_the_reason(local_stack, tmp_path, keys):
    malformed = tmp_path / "api-keys"
    malformed.write_text(f"{auth.hash_key(keys['a'])} {TENANT_A}\n{keys['b']} {TENANT_B}\n")
    for name, env, reason in (
        ("malformed", str(malformed), f"{malformed}:2: the first field looks like a plain API key"),
        ("missing", str(tmp_path / "absent"), f"cannot read the API key file {tmp_path / 'absent'}"),
    ):
        with pytest.raises(RuntimeError, match="image-input exited with 1"):
            start_image_input(local_stack, tmp_path / name, FACEANALYSIS_API_KEYS_FILE=env)
        text = (tmp_path / name / "logs" / "image-input.log").read_text()
        assert reason in text, text
        assert keys["b"] not in text and "Traceback" not in text
