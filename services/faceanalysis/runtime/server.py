"""Service bootstrap shared by all four services.

`serve(name)` reads settings, starts the gRPC server with health, reflection, metrics and
request-id interceptors, then loads the service's models in the background. Health turns
SERVING only after `ServiceApp.load()` returned, which includes a warm-up inference. On
SIGTERM or SIGINT health turns NOT_SERVING, new calls are refused and in-flight calls get
`shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_reflection.v1alpha import reflection

from faceanalysis.runtime import config, logging as fa_logging, metrics, services
from faceanalysis.runtime.channels import message_size_options
from faceanalysis.runtime.health import Health
from faceanalysis.runtime.interceptors import MetricsInterceptor, RequestIdInterceptor

log = logging.getLogger("faceanalysis.server")


class NotReady(Exception):
    """Raised by ServiceApp.load() when the service cannot serve (e.g. a model file is missing).

    The message must say what is missing and how to get it; the service stays NOT_SERVING.
    """


@dataclass
class ServiceApp:
    """What a service plugs into the shared bootstrap."""

    spec: services.ServiceSpec
    # Called with the grpc.Server to add the service's servicers.
    register: callable
    # Loads models and runs one warm-up inference; raises NotReady when it cannot.
    load: callable = lambda: None
    close: callable = lambda: None
    # Full names of the gRPC services to expose through reflection.
    reflected: tuple[str, ...] = field(default_factory=tuple)
    max_message_bytes: int = 0


class Server:
    """A running service: gRPC server, health and the background model load."""

    def __init__(self, app: ServiceApp, settings: config.Settings):
        self.app, self.settings = app, settings
        self.health = Health(app.spec.name, app.spec.grpc_service)
        ms = int(settings.max_connection_age_seconds * 1000)
        options = [
            ("grpc.max_connection_age_ms", ms),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_seconds * 1000)),
            *message_size_options(app.max_message_bytes),
        ]
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=app.spec.name),
            interceptors=[RequestIdInterceptor(), MetricsInterceptor(app.spec.name)],
            options=options,
        )
        self.health.register(self.grpc)
        app.register(self.grpc)
        reflection.enable_server_reflection(
            (*app.reflected, "grpc.health.v1.Health", reflection.SERVICE_NAME), self.grpc
        )
        self.port = self.grpc.add_insecure_port(f"{settings.bind_host}:{settings.grpc_port_for(app.spec)}")
        self.stopped = threading.Event()
        self._stop_lock = threading.RLock()  # re-entrant: the signal handler runs on the main thread

    def start(self) -> None:
        self.grpc.start()
        metrics.start_metrics_server(self.settings.metrics_port_for(self.app.spec))
        fa_logging.log(log, logging.INFO, "listening", grpc_port=self.port,
                       metrics_port=self.settings.metrics_port_for(self.app.spec))
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            self.app.load()
        except NotReady as err:
            fa_logging.log(log, logging.ERROR, f"not ready: {err}", state="NOT_SERVING")
            return
        except Exception:  # a broken model must not kill the process: probes report it
            log.exception("start-up failed; staying NOT_SERVING")
            return
        if not self.stopped.is_set():
            self.health.set(True)
            fa_logging.log(log, logging.INFO, "serving", ready_seconds=round(time.perf_counter() - start, 3))

    def stop(self, *_signal) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight calls finish within the grace period."""
        with self._stop_lock:
            if self.stopped.is_set():
                return
            fa_logging.log(log, logging.INFO, "draining", grace_seconds=self.settings.shutdown_grace_seconds)
            self.health.drain()
            self._drained = self.grpc.stop(self.settings.shutdown_grace_seconds)
            self.stopped.set()

    def wait(self) -> None:
        """Block until stop() was called and in-flight calls finished, then release resources."""
        self.stopped.wait()
        self._drained.wait()
        self.app.close()
        fa_logging.log(log, logging.INFO, "stopped")


def serve(name: str) -> None:
    spec = services.get(name)
    settings = config.load()
    fa_logging.setup(spec.name, settings.log_level)
    module = importlib.import_module(spec.module)
    app: ServiceApp = module.build(settings)
    server = Server(app, settings)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    server.start()
    server.wait()
