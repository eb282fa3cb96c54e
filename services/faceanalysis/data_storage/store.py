"""Redis and archive storage of results, kept apart per tenant.

Each tenant has its own Redis namespace: `fa:` for the tenant `default` (the layout from before
tenants, so a stack with API keys off keeps its data), `fa:tenant:<tenant>:` for any other
(tenant names hold no `:`, so no namespace is a prefix of another's keys). In a namespace NS:
- `NS result:<id>`  hash {result: JSON, cache_key}, expires after the TTL;
- `NS index`        sorted set of ids by creation time, for listing newest first;
- `NS cache:<key>`  id of the result for an image sha256 plus options, same TTL.
The archive holds `<archive_dir>/<id>.json` for `default` and
`<archive_dir>/tenants/<tenant>/<id>.json` for the others, written atomically (temp file, fsync,
rename). A result is acknowledged only once both hold it.

Every operation takes the tenant and looks only in its namespace and folder, so another tenant's
id reads exactly like a missing one, also once Redis expired it and only the archive has it, and
the cache never hands out another tenant's analysis.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import redis

from faceanalysis.runtime import results, tenants
from faceanalysis.v1 import common_pb2

PREFIX = "fa:"


def _checked(tenant: str) -> str:
    if not tenants.valid(tenant):  # tenants become key parts and folder names
        raise ValueError(f"invalid tenant {tenant!r}")
    return tenant


def namespace(tenant: str) -> str:
    return PREFIX if _checked(tenant) == tenants.DEFAULT else f"{PREFIX}tenant:{tenant}:"


def result_key(tenant: str, analysis_id: str) -> str:
    return f"{namespace(tenant)}result:{analysis_id}"


def index_key(tenant: str) -> str:
    return f"{namespace(tenant)}index"


def cache_key(tenant: str, key: str) -> str:
    return f"{namespace(tenant)}cache:{key}"


class Archive:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def folder(self, tenant: str) -> Path:
        return self.directory if _checked(tenant) == tenants.DEFAULT else self.directory / "tenants" / tenant

    def path(self, tenant: str, analysis_id: str) -> Path:
        if not results.valid_id(analysis_id):  # ids never come from clients' file names
            raise ValueError(f"invalid analysis id {analysis_id!r}")
        return self.folder(tenant) / f"{analysis_id}.json"

    def check_writable(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
            pass

    def write(self, tenant: str, analysis_id: str, text: str) -> Path:
        path = self.path(tenant, analysis_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{analysis_id}.", suffix=".tmp")
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

    def read(self, tenant: str, analysis_id: str) -> str | None:
        path = self.path(tenant, analysis_id)
        return path.read_text() if path.is_file() else None

    def delete(self, tenant: str, analysis_id: str) -> bool:
        path = self.path(tenant, analysis_id)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed

    def sweep(self, max_age_seconds: float, now: float | None = None) -> int:
        """Deletes every tenant's archived results written more than `max_age_seconds` ago;
        returns how many. Replicas sharing the archive may sweep at once: a file another one
        removed first is simply gone."""
        cutoff = (time.time() if now is None else now) - max_age_seconds
        removed = 0
        folders = [self.directory, *sorted((self.directory / "tenants").glob("*"))]
        for folder in folders:
            for path in folder.glob("*.json"):  # results only: temp files start with a dot
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


class Store:
    def __init__(self, client: redis.Redis, archive: Archive, ttl_seconds: int):
        self.redis, self.archive, self.ttl = client, archive, ttl_seconds

    def ping(self) -> None:
        self.redis.ping()
        self.archive.check_writable()

    def put(self, tenant: str, result: common_pb2.AnalysisResult, key: str) -> Path:
        # What we keep is what we acknowledge: a stored result reads back as stored.
        kept = common_pb2.AnalysisResult()
        kept.CopyFrom(result)
        kept.stored = True
        kept.ClearField("storage_error")
        text = results.to_json(kept)
        path = self.archive.write(tenant, result.analysis_id, text)
        # To the microsecond: whole seconds would list analyses of the same second in id order, not newest first.
        created = result.created_at.ToMicroseconds() / 1e6 if result.HasField("created_at") else time.time()
        stored = result_key(tenant, result.analysis_id)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(stored, mapping={"result": text, "cache_key": key or ""})
            pipe.expire(stored, self.ttl)
            pipe.zadd(index_key(tenant), {result.analysis_id: created})
            if key:
                pipe.set(cache_key(tenant, key), result.analysis_id, ex=self.ttl)
            pipe.execute()
        except redis.RedisError:
            # Not acknowledged: leave nothing behind that a later get could mistake for stored.
            self.archive.delete(tenant, result.analysis_id)
            raise
        return path

    def get(self, tenant: str, analysis_id: str) -> common_pb2.AnalysisResult | None:
        text = self.redis.hget(result_key(tenant, analysis_id), "result")
        if text is None:
            # Expired from Redis (TTL) or Redis lost it: the tenant's archive still has it.
            text = self.archive.read(tenant, analysis_id)
        return results.from_json(text) if text else None

    def lookup(self, tenant: str, key: str) -> common_pb2.AnalysisResult | None:
        analysis_id = self.redis.get(cache_key(tenant, key))
        if not analysis_id:
            return None
        text = self.redis.hget(result_key(tenant, analysis_id.decode()), "result")
        return results.from_json(text) if text else None

    def list(self, tenant: str, limit: int, offset: int) -> tuple[list[common_pb2.AnalysisResult], bool]:
        """Newest first; drops index entries whose result expired."""
        index = index_key(tenant)
        self.redis.zremrangebyscore(index, "-inf", time.time() - self.ttl)
        ids = [i.decode() for i in self.redis.zrevrange(index, offset, offset + limit)]
        more = len(ids) > limit
        ids = ids[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for analysis_id in ids:
            pipe.hget(result_key(tenant, analysis_id), "result")
        found = []
        for analysis_id, text in zip(ids, pipe.execute()):
            if text is None:
                self.redis.zrem(index, analysis_id)
                continue
            found.append(results.from_json(text))
        return found, more

    def delete(self, tenant: str, analysis_id: str) -> bool:
        stored = result_key(tenant, analysis_id)
        key = self.redis.hget(stored, "cache_key")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(stored)
        pipe.zrem(index_key(tenant), analysis_id)
        if key:
            pipe.delete(cache_key(tenant, key.decode()))
        removed = pipe.execute()
        from_archive = self.archive.delete(tenant, analysis_id)
        return bool(removed[0]) or from_archive
