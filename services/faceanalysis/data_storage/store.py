"""Redis and archive storage of results.

Redis layout (prefix `fa:`):
- `fa:result:<id>`  hash {result: JSON, cache_key}, expires after the TTL;
- `fa:index`        sorted set of ids by creation time, for listing newest first;
- `fa:cache:<key>`  id of the result for an image sha256 plus options, same TTL.
The archive holds `<archive_dir>/<id>.json`, written atomically (temp file, fsync, rename).
A result is acknowledged only once both hold it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import redis

from faceanalysis.runtime import results
from faceanalysis.v1 import common_pb2

PREFIX = "fa:"
INDEX = PREFIX + "index"


def result_key(analysis_id: str) -> str:
    return f"{PREFIX}result:{analysis_id}"


def cache_key(key: str) -> str:
    return f"{PREFIX}cache:{key}"


class Archive:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, analysis_id: str) -> Path:
        if not results.valid_id(analysis_id):  # ids never come from clients' file names
            raise ValueError(f"invalid analysis id {analysis_id!r}")
        return self.directory / f"{analysis_id}.json"

    def check_writable(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
            pass

    def write(self, analysis_id: str, text: str) -> Path:
        path = self.path(analysis_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{analysis_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read(self, analysis_id: str) -> str | None:
        path = self.path(analysis_id)
        return path.read_text() if path.is_file() else None

    def delete(self, analysis_id: str) -> bool:
        path = self.path(analysis_id)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed


class Store:
    def __init__(self, client: redis.Redis, archive: Archive, ttl_seconds: int):
        self.redis, self.archive, self.ttl = client, archive, ttl_seconds

    def ping(self) -> None:
        self.redis.ping()
        self.archive.check_writable()

    def put(self, result: common_pb2.AnalysisResult, key: str) -> Path:
        # What we keep is what we acknowledge: a stored result reads back as stored.
        kept = common_pb2.AnalysisResult()
        kept.CopyFrom(result)
        kept.stored = True
        kept.ClearField("storage_error")
        text = results.to_json(kept)
        path = self.archive.write(result.analysis_id, text)
        created = result.created_at.ToSeconds() if result.HasField("created_at") else time.time()
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(result_key(result.analysis_id), mapping={"result": text, "cache_key": key or ""})
            pipe.expire(result_key(result.analysis_id), self.ttl)
            pipe.zadd(INDEX, {result.analysis_id: created})
            if key:
                pipe.set(cache_key(key), result.analysis_id, ex=self.ttl)
            pipe.execute()
        except redis.RedisError:
            # Not acknowledged: leave nothing behind that a later get could mistake for stored.
            self.archive.delete(result.analysis_id)
            raise
        return path

    def get(self, analysis_id: str) -> common_pb2.AnalysisResult | None:
        text = self.redis.hget(result_key(analysis_id), "result")
        if text is None:
            # Expired from Redis (TTL) or Redis lost it: the archive still has it.
            text = self.archive.read(analysis_id)
        return results.from_json(text) if text else None

    def lookup(self, key: str) -> common_pb2.AnalysisResult | None:
        analysis_id = self.redis.get(cache_key(key))
        if not analysis_id:
            return None
        text = self.redis.hget(result_key(analysis_id.decode()), "result")
        return results.from_json(text) if text else None

    def list(self, limit: int, offset: int) -> tuple[list[common_pb2.AnalysisResult], bool]:
        """Newest first; drops index entries whose result expired."""
        self.redis.zremrangebyscore(INDEX, "-inf", time.time() - self.ttl)
        ids = [i.decode() for i in self.redis.zrevrange(INDEX, offset, offset + limit)]
        more = len(ids) > limit
        ids = ids[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for analysis_id in ids:
            pipe.hget(result_key(analysis_id), "result")
        found = []
        for analysis_id, text in zip(ids, pipe.execute()):
            if text is None:
                self.redis.zrem(INDEX, analysis_id)
                continue
            found.append(results.from_json(text))
        return found, more

    def delete(self, analysis_id: str) -> bool:
        key = self.redis.hget(result_key(analysis_id), "cache_key")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(result_key(analysis_id))
        pipe.zrem(INDEX, analysis_id)
        if key:
            pipe.delete(cache_key(key.decode()))
        removed = pipe.execute()
        from_archive = self.archive.delete(analysis_id)
        return bool(removed[0]) or from_archive
