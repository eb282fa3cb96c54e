"""Stored results: get, list, delete; storage outages; Redis persistence across a restart."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import redis

from faceanalysis.cli.stack import Redis, free_port
from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.support import image


def stored_again_soon(api, seconds: float = 15) -> bool:
    """After an outage, image-input reconnects within seconds; results are stored again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if analyze(api, "face_recognition/obama.jpg", skip_cache=True).stored:
            return True
        time.sleep(0.5)
    return False


def analyze(api, relative: str, **options) -> common_pb2.AnalysisResult:
    request = image_input_pb2.AnalyzeImageRequest(image=image(relative).read_bytes(),
                                                  options=common_pb2.AnalysisOptions(**options))
    return api.AnalyzeImage(request, timeout=120).result


def test_get_list_delete(api, local_stack):
    result = analyze(api, "face_recognition/two_people.jpg", skip_cache=True)
    assert result.stored
    archived = local_stack.archive_dir / f"{result.analysis_id}.json"
    assert archived.is_file()

    got = api.GetAnalysis(image_input_pb2.GetAnalysisRequest(analysis_id=result.analysis_id), timeout=10).result
    assert got.analysis_id == result.analysis_id and len(got.faces) == 2
    assert got.stored and not got.cached
    assert got.faces[0].landmarks == result.faces[0].landmarks

    listed = api.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_size=500), timeout=10)
    summary = {a.analysis_id: a for a in listed.analyses}[result.analysis_id]
    assert summary.face_count == 2 and summary.image_sha256 == result.image.sha256

    deleted = api.DeleteAnalysis(image_input_pb2.DeleteAnalysisRequest(analysis_id=result.analysis_id), timeout=10)
    assert deleted.deleted
    assert not archived.exists()
    with pytest.raises(grpc.RpcError) as err:
        api.GetAnalysis(image_input_pb2.GetAnalysisRequest(analysis_id=result.analysis_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Deleting also drops the cache entry: the same image is analysed afresh.
    assert not analyze(api, "face_recognition/two_people.jpg").cached


def test_list_pages(api):
    for _ in range(3):
        analyze(api, "misc/astronaut.png", skip_cache=True)
    first = api.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_size=2), timeout=10)
    assert len(first.analyses) == 2 and first.next_page_token
    second = api.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_size=2, page_token=first.next_page_token),
                              timeout=10)
    assert not {a.analysis_id for a in first.analyses} & {a.analysis_id for a in second.analyses}
    with pytest.raises(grpc.RpcError) as err:
        api.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_token="not-a-token"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_store_writes_nothing(api, local_stack):
    before = sorted(p.name for p in local_stack.archive_dir.glob("*.json"))
    result = analyze(api, "misc/astronaut.png", no_store=True)
    assert not result.stored and len(result.faces) == 1
    assert sorted(p.name for p in local_stack.archive_dir.glob("*.json")) == before
    with pytest.raises(grpc.RpcError) as err:
        api.GetAnalysis(image_input_pb2.GetAnalysisRequest(analysis_id=result.analysis_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_storage_down_still_answers_with_stored_false(api, local_stack):
    local_stack.stop_service("data-storage")
    try:
        result = analyze(api, "face_recognition/obama.jpg", skip_cache=True)
        assert not result.stored
        assert "data-storage" in result.storage_error
        assert len(result.faces) == 1 and result.faces[0].HasField("age")
        with pytest.raises(grpc.RpcError) as err:
            api.ListAnalyses(image_input_pb2.ListAnalysesRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        local_stack.start_service("data-storage")
        local_stack.wait_serving(["data-storage"])
    assert stored_again_soon(api)


def test_redis_down_still_answers_with_stored_false(api, local_stack):
    local_stack.redis.stop()
    try:
        result = analyze(api, "face_recognition/obama.jpg", skip_cache=True)
        assert not result.stored and "UNAVAILABLE" in result.storage_error
        # An unacknowledged result leaves no archive file behind.
        assert not (local_stack.archive_dir / f"{result.analysis_id}.json").exists()
    finally:
        local_stack.redis.start(open(local_stack.log_dir / "redis.log", "ab"))
    assert stored_again_soon(api)


def test_redis_restart_keeps_results_with_aof(api, local_stack):
    result = analyze(api, "misc/t1.jpg", skip_cache=True)
    assert result.stored
    local_stack.redis.stop()
    local_stack.redis.start(open(local_stack.log_dir / "redis.log", "ab"))
    client = redis.Redis.from_url(local_stack.redis.url)
    # Straight from Redis, not the archive fallback: AOF brought the entry back.
    assert client.hget(f"fa:result:{result.analysis_id}", "result") is not None
    assert client.ttl(f"fa:result:{result.analysis_id}") > 0
    archived = json.loads((local_stack.archive_dir / f"{result.analysis_id}.json").read_text())
    assert archived["stored"] is True
    got = api.GetAnalysis(image_input_pb2.GetAnalysisRequest(analysis_id=result.analysis_id), timeout=10).result
    assert len(got.faces) == 6


def test_redis_without_persistence_loses_results(tmp_path):
    """The contrast that shows the test above is meaningful: no AOF, no data after a restart."""
    server = Redis(port=free_port(), directory=tmp_path, appendonly=False)
    server.start(open(tmp_path / "log", "ab"))
    try:
        redis.Redis.from_url(server.url).set("k", "v")
        server.stop()
        server.start(open(tmp_path / "log", "ab"))
        assert redis.Redis.from_url(server.url).get("k") is None
    finally:
        server.stop()
