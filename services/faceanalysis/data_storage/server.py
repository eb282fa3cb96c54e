"""data-storage gRPC service (grpc.aio; Redis and archive calls run in the thread pool)."""

from __future__ import annotations

import logging
import threading

import grpc
import redis

from faceanalysis.data_storage.store import Archive, Store
from faceanalysis.runtime import channels, config, metrics, results, services, tenants
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.runtime.server import ServiceApp
from faceanalysis.runtime.work import run_blocking
from faceanalysis.v1 import data_storage_pb2, data_storage_pb2_grpc, image_input_pb2

log = logging.getLogger(__name__)
DEFAULT_PAGE = 50
RETENTION_EVERY_SECONDS = 3600
MAX_PAGE = 500


def connect(settings: config.Settings) -> redis.Redis:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    kwargs = {"password": password} if password else {}
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=30, **kwargs)


class DataStorageServicer(data_storage_pb2_grpc.DataStorageServicer):
    def __init__(self, store: Store):
        self.store = store

    async def _run(self, operation: str, context, fn):
        """Runs one storage operation, counting its outcome and mapping failures to status codes.

        Both failures are UNAVAILABLE: image-input retries them, so a Redis restart of a few
        seconds loses no result."""
        try:
            value = await run_blocking(fn)
        except redis.RedisError as err:
            metrics.STORAGE_OPERATIONS.labels(operation, "error").inc()
            log_fields(log, logging.WARNING, "redis unavailable", operation=operation, error=str(err))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis unavailable: {err}")
        except OSError as err:
            metrics.STORAGE_OPERATIONS.labels(operation, "error").inc()
            log_fields(log, logging.ERROR, "archive failure", operation=operation, error=str(err))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"archive unavailable: {err}")
        metrics.STORAGE_OPERATIONS.labels(operation, "not_found" if value is None else "success").inc()
        return value

    async def StoreResult(self, request, context):
        tenant = await tenants.require_valid(request.tenant, context)
        await results.require_valid_id(request.result.analysis_id, context)
        path = await self._run("store", context, lambda: self.store.put(tenant, request.result, request.cache_key))
        return data_storage_pb2.StoreResultResponse(archive_path=str(path))

    async def LookupCache(self, request, context):
        tenant = await tenants.require_valid(request.tenant, context)
        if not request.cache_key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cache_key is empty")
        found = await self._run("lookup", context, lambda: self.store.lookup(tenant, request.cache_key))
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no cached result for this key")
        return data_storage_pb2.StoredResult(result=found)

    async def GetResult(self, request, context):
        tenant = await tenants.require_valid(request.tenant, context)
        await results.require_valid_id(request.analysis_id, context)
        found = await self._run("get", context, lambda: self.store.get(tenant, request.analysis_id))
        if found is None:
            # The same answer for another tenant's id as for a missing one: existence never leaks.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"analysis {request.analysis_id} not found")
        return data_storage_pb2.StoredResult(result=found)

    async def ListResults(self, request, context):
        tenant = await tenants.require_valid(request.tenant, context)
        if request.page_size < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        try:
            offset = int(request.page_token or 0)
            if offset < 0:
                raise ValueError
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this server issued")
        found, more = await self._run("list", context, lambda: self.store.list(tenant, size, offset))
        return image_input_pb2.ListAnalysesResponse(
            analyses=[
                image_input_pb2.AnalysisSummary(analysis_id=r.analysis_id, face_count=len(r.faces),
                                                image_sha256=r.image.sha256)
                for r in found
            ],
            next_page_token=str(offset + size) if more else "",
        )

    async def DeleteResult(self, request, context):
        tenant = await tenants.require_valid(request.tenant, context)
        await results.require_valid_id(request.analysis_id, context)
        # Another tenant's id is left alone and answers deleted=false, like a missing one.
        deleted = await self._run("delete", context, lambda: self.store.delete(tenant, request.analysis_id))
        return image_input_pb2.DeleteAnalysisResponse(deleted=deleted)


def build(settings: config.Settings) -> ServiceApp:
    store = Store(connect(settings), Archive(settings.archive_dir), settings.result_ttl_seconds)
    servicer = DataStorageServicer(store)
    stop = threading.Event()

    def load() -> None:
        # Ready means Redis answers and the archive is writable; wait for both with backoff.
        delay = 0.2
        while not stop.is_set():
            try:
                store.ping()
                break
            except (redis.RedisError, OSError) as err:
                log_fields(log, logging.WARNING, "storage not ready, retrying", error=str(err), retry_in=delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        if settings.archive_retention_days > 0:
            threading.Thread(target=sweep_archive, name="archive-retention", daemon=True).start()

    def sweep_archive() -> None:
        max_age = settings.archive_retention_days * 86400
        while not stop.is_set():
            try:
                removed = store.archive.sweep(max_age)
                if removed:
                    log_fields(log, logging.INFO, "archive retention", removed=removed,
                               older_than_days=settings.archive_retention_days)
            except OSError as err:
                log_fields(log, logging.WARNING, "archive retention failed", error=str(err))
            stop.wait(RETENTION_EVERY_SECONDS)

    return ServiceApp(
        spec=services.DATA_STORAGE,
        register=lambda server: data_storage_pb2_grpc.add_DataStorageServicer_to_server(servicer, server),
        load=load,
        close=stop.set,
        reflected=(services.DATA_STORAGE.grpc_service,),
        max_message_bytes=channels.PEER_MESSAGE_BYTES,
    )
