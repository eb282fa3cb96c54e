"""Service bootstrap shared by all four services (grpc.aio).

Why asyncio: an open call, an idle stream or a slow client then costs a coroutine, not one of a
few handler threads, so no number of open streams can block a unary call or a health probe.
Blocking work (decoding, inference, Redis) runs in the loop's thread pool (`max_workers`), and
`runtime.work.Admission` caps what a pod holds at once.

`serve(name)` reads settings, starts the gRPC server with health, reflection, metrics and
request-id interceptors (TLS or mTLS when certificate files are set, see runtime/tls.py, and then
optionally a plaintext health-only port for the kubelet's probes), then loads the service's models
in the thread pool. An app's companions (image-input's HTTP/JSON API) start on the same loop once
the gRPC server runs. Health turns SERVING only after `ServiceApp.load()` returned, which includes
a warm-up inference. On SIGTERM or SIGINT health turns NOT_SERVING, the app's `drain` hook runs
(streams stop taking new items and end once their in-flight items are answered), new calls are
refused, and in-flight calls get `shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
from grpc_reflection.v1alpha import reflection

from faceanalysis.runtime import config, logging as fa_logging, memory, metrics, services, tls
from faceanalysis.runtime.channels import message_size_options
from faceanalysis.runtime.health import Health
from faceanalysis.runtime.interceptors import MetricsInterceptor, RequestIdInterceptor

log = logging.getLogger("faceanalysis.server")


class NotReady(Exception):
    """Raised by ServiceApp.load() when the service cannot serve (e.g. a model file is missing).

    The message must say what is missing and how to get it; the service stays NOT_SERVING.
    """


def _nothing() -> None:
    return None


async def _nothing_async() -> None:
    return None


@dataclass
class ServiceApp:
    """What a service plugs into the shared bootstrap."""

    spec: services.ServiceSpec
    # Called with the grpc.aio.Server to add the service's servicers.
    register: Callable
    # Blocking: loads models and runs one warm-up inference; raises NotReady when it cannot.
    load: Callable[[], None] = _nothing
    # Blocking: run once on every worker thread after load(), before health turns SERVING, for
    # what is built per thread (face-landmark's YuNet instances): the first calls then run at
    # the speed of the following ones instead of about half of it.
    warm_thread: Callable[[], None] = _nothing
    # Blocking: releases what load() built (after the server stopped).
    close: Callable[[], None] = _nothing
    # Async, on SIGTERM before the server stops: streams stop taking new work.
    drain: Callable[[], Awaitable[None]] = _nothing_async
    # Full names of the gRPC services to expose through reflection.
    reflected: tuple[str, ...] = field(default_factory=tuple)
    max_message_bytes: int = 0
    # grpc.aio server interceptors of this service (image-input's API keys), run after the shared
    # request-id and metrics ones, so refused calls are counted and logged with their request id.
    interceptors: tuple = field(default_factory=tuple)
    # Front ends served beside the gRPC server, on its loop (image-input's HTTP/JSON API): objects with
    # `async start(loopback_target)` and `async stop()`. They call the service's own gRPC API over
    # `loopback_target`, a unix socket the gRPC server also listens on (plaintext, in a private 0700
    # directory), so their calls pass the same interceptors (API keys, metrics, request ids) as any other.
    # Started once the gRPC server runs; stopped with it, given the same grace.
    companions: tuple = field(default_factory=tuple)


def server_options(settings: config.Settings, max_message_bytes: int) -> list[tuple[str, int]]:
    ms = lambda seconds: int(seconds * 1000)  # noqa: E731
    return [
        # Clients re-resolve DNS when a connection ages out, and so reach pods the HPA added.
        ("grpc.max_connection_age_ms", ms(settings.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace_seconds)),
        # Ping quiet connections so a vanished client's calls are cancelled, not held forever.
        ("grpc.keepalive_time_ms", ms(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_seconds)),
        # Accept our own clients' keepalive pings (every 30 s, with or without calls).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        *message_size_options(max_message_bytes),
    ]


class Server:
    """A running service: gRPC server, health and the background model load."""

    def __init__(self, app: ServiceApp, settings: config.Settings):
        self.app, self.settings = app, settings
        self.health = Health(app.spec.name, app.spec.grpc_service)
        self.grpc = grpc.aio.server(
            interceptors=[RequestIdInterceptor(), MetricsInterceptor(app.spec.name), *app.interceptors],
            options=server_options(settings, app.max_message_bytes),
        )
        self.health.register(self.grpc)
        app.register(self.grpc)
        reflection.enable_server_reflection(
            (*app.reflected, "grpc.health.v1.Health", reflection.SERVICE_NAME), self.grpc
        )
        address = f"{settings.bind_host}:{settings.grpc_port_for(app.spec)}"
        credentials = tls.server_credentials(settings)  # None: plaintext
        self.port = (self.grpc.add_secure_port(address, credentials) if credentials
                     else self.grpc.add_insecure_port(address))
        self.health_grpc, self.health_port = self._health_only_server()
        self.loopback_dir, self.loopback_target = self._loopback()
        self.stopping = asyncio.Event()
        self._load_task: asyncio.Task | None = None

    def _health_only_server(self) -> tuple[grpc.aio.Server | None, int | None]:
        """A plaintext port answering grpc.health.v1 only (FACEANALYSIS_HEALTH_PORT): the kubelet's
        gRPC probe cannot speak TLS, and this port tells nothing beyond SERVING or NOT_SERVING."""
        if self.settings.health_port is None:
            return None, None
        server = grpc.aio.server()
        self.health.register(server)  # the same servicer: both ports always report the same state
        return server, server.add_insecure_port(f"{self.settings.bind_host}:{self.settings.health_port}")

    def _loopback(self) -> tuple[str | None, str | None]:
        """The private unix socket for the app's companions: (its directory, its gRPC target)."""
        if not self.app.companions:
            return None, None
        directory = tempfile.mkdtemp(prefix=f"{self.app.spec.name}-")  # mode 0700: this user only
        target = f"unix:{os.path.join(directory, 'grpc.sock')}"
        self.grpc.add_insecure_port(target)
        return directory, target

    async def start(self) -> None:
        await self.health.set(False)
        await self.grpc.start()
        if self.health_grpc is not None:
            await self.health_grpc.start()
        metrics.start_metrics_server(self.settings.metrics_port_for(self.app.spec))
        fa_logging.log(log, logging.INFO, "listening", grpc_port=self.port, tls=tls.describe(self.settings),
                       health_port=self.health_port,
                       metrics_port=self.settings.metrics_port_for(self.app.spec),
                       work_threads=self.settings.max_workers)
        for companion in self.app.companions:
            await companion.start(self.loopback_target)
        self._load_task = asyncio.create_task(self._load())

    async def _load(self) -> None:
        start = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.app.load)
            await self._warm_threads()
        except NotReady as err:
            fa_logging.log(log, logging.ERROR, f"not ready: {err}", state="NOT_SERVING")
            return
        except Exception:  # a broken model must not kill the process: probes report it
            log.exception("start-up failed; staying NOT_SERVING")
            return
        if not self.stopping.is_set():
            await self.health.set(True)
            fa_logging.log(log, logging.INFO, "serving", ready_seconds=round(time.perf_counter() - start, 3))

    async def _warm_threads(self) -> None:
        """`app.warm_thread` on each of the pool's threads: as many tasks as threads, held at a
        barrier until all have started, so no thread runs two of them."""
        if self.app.warm_thread is _nothing:
            return
        barrier = threading.Barrier(self.settings.max_workers)

        def warm() -> None:
            try:
                barrier.wait(timeout=30)
            except threading.BrokenBarrierError:  # a thread stayed busy: warm this one anyway
                pass
            self.app.warm_thread()

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, warm) for _ in range(self.settings.max_workers)))

    def request_stop(self) -> None:
        self.stopping.set()

    async def stop(self) -> None:
        """Drain: NOT_SERVING, streams wind down, new calls refused, in-flight calls finish within the grace."""
        grace = self.settings.shutdown_grace_seconds
        fa_logging.log(log, logging.INFO, "draining", grace_seconds=grace)
        await self.health.drain()
        await self.app.drain()
        await asyncio.gather(self.grpc.stop(grace), *(companion.stop() for companion in self.app.companions))
        if self.health_grpc is not None:
            await self.health_grpc.stop(0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(futures.ThreadPoolExecutor(
            max_workers=self.settings.max_workers, thread_name_prefix=f"{self.app.spec.name}-work"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self.stopping.wait()
            await self.stop()
        finally:
            if self.loopback_dir is not None:
                shutil.rmtree(self.loopback_dir, ignore_errors=True)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await loop.run_in_executor(None, self.app.close)
        fa_logging.log(log, logging.INFO, "stopped")


def serve(name: str) -> None:
    spec = services.get(name)
    settings = config.load()
    tls.check(settings)  # a bad certificate file stops the start here, with one line naming it
    fa_logging.setup(spec.name, settings.log_level)
    memory.limit_arenas()

    async def main() -> None:
        module = importlib.import_module(spec.module)
        app: ServiceApp = module.build(settings)
        await Server(app, settings).run()

    asyncio.run(main())
