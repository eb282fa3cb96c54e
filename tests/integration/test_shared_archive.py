"""Replicas of data-storage share one archive (a ReadWriteMany volume in a cluster, one folder
here): every replica gives the same answer, also after a result's Redis entry expired; and
archived results older than the retention go."""

from __future__ import annotations

import os
import time
import uuid

import grpc
import pytest
import redis

from faceanalysis.cli.stack import LocalStack
from faceanalysis.data_storage.store import Archive, result_key
from faceanalysis.runtime import tenants
from faceanalysis.v1 import common_pb2, data_storage_pb2, data_storage_pb2_grpc

TENANT = "team-a"


@pytest.fixture(scope="module")
def replicas(models_dir, tmp_path_factory):
    """Redis and two data-storage processes on one archive folder; yields their stubs and Redis."""
    work = tmp_path_factory.mktemp("shared-archive")
    first = LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work / "a", random_ports=True)
    second = LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work / "b", random_ports=True)
    second.redis_port = first.redis_port
    channels = []
    try:
        first.start_redis()
        for stack in (first, second):
            stack.start_service("data-storage")
            stack.wait_serving(["data-storage"], timeout=60)
            channels.append(grpc.insecure_channel(stack.target("data-storage")))
        yield ([data_storage_pb2_grpc.DataStorageStub(c) for c in channels],
               redis.Redis(port=first.redis_port), work / "archive")
    finally:
        for channel in channels:
            channel.close()
        second.stop()
        first.stop()


def a_result() -> common_pb2.AnalysisResult:
    result = common_pb2.AnalysisResult(analysis_id=uuid.uuid4().hex)
    result.image.sha256 = "ab" * 32
    result.faces.add().box.width = 10
    result.created_at.GetCurrentTime()
    return result


def get(stub, analysis_id: str):
    return stub.GetResult(data_storage_pb2.GetResultRequest(analysis_id=analysis_id, tenant=TENANT), timeout=10)


def test_a_result_stored_by_one_replica_is_read_and_deleted_by_the_other(replicas):
    (one, other), client, archive = replicas
    result = a_result()
    one.StoreResult(data_storage_pb2.StoreResultRequest(result=result, cache_key="k1", tenant=TENANT), timeout=10)
    assert get(other, result.analysis_id).result.analysis_id == result.analysis_id

    # Redis forgets it (its TTL passed): both replicas still find it, in the shared archive.
    client.delete(result_key(TENANT, result.analysis_id))
    for stub in (one, other):
        assert get(stub, result.analysis_id).result.faces[0].box.width == 10

    deleted = other.DeleteResult(data_storage_pb2.DeleteResultRequest(analysis_id=result.analysis_id, tenant=TENANT),
                                 timeout=10)
    assert deleted.deleted
    for stub in (one, other):
        with pytest.raises(grpc.RpcError) as err:
            get(stub, result.analysis_id)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list(archive.rglob(f"{result.analysis_id}.json"))


def test_retention_removes_only_archived_results_older_than_it(tmp_path):
    archive = Archive(tmp_path)
    now = time.time()
    ages = {"old-default": (tenants.DEFAULT, 40), "new-default": (tenants.DEFAULT, 5),
            "old-team": (TENANT, 31), "new-team": (TENANT, 29)}
    paths = {}
    for name, (tenant, days) in ages.items():
        paths[name] = archive.write(tenant, uuid.uuid4().hex, "{}")
        os.utime(paths[name], (now - days * 86400, now - days * 86400))
    half_written = tmp_path / ".abc.tmp"
    half_written.write_text("{")
    os.utime(half_written, (now - 90 * 86400, now - 90 * 86400))

    assert archive.sweep(30 * 86400, now=now) == 2
    assert {name for name, path in paths.items() if path.exists()} == {"new-default", "new-team"}
    assert half_written.exists()  # not a result: another replica may be writing it
    assert archive.sweep(30 * 86400, now=now) == 0
