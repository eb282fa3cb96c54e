"""The public edge for the docs and proxy tests: a real Debian nginx in front of the local stack,
configured the way ingress-nginx renders the chart's image-input Ingress, plus the tools that
call it (grpcurl, the CLI) and the large photos that used to fail there.

How the chart's Ingress becomes nginx configuration (ingress-nginx's nginx.tmpl, controller v1.12):

| chart (annotation or controller ConfigMap)       | nginx directive                                  |
|--------------------------------------------------|--------------------------------------------------|
| backend-protocol: GRPC                           | grpc_pass grpc://<service>  (location /)         |
| proxy-body-size (default 1m)                     | client_max_body_size (location; "0" = no limit)  |
| proxy-read-timeout (default 60)                  | grpc_read_timeout (and proxy_read_timeout)       |
| proxy-send-timeout (default 60)                  | grpc_send_timeout (and proxy_send_timeout)       |
| proxy-connect-timeout (default 5)                | grpc_connect_timeout (and proxy_connect_timeout) |
| client-body-buffer-size (default 8k)             | client_body_buffer_size (location)               |
| ConfigMap client-body-timeout (default 60; the   | client_body_timeout (http)                       |
| patch in docs/deploy.md sets it)                 |                                                  |
| ConfigMap large-client-header-buffers ("4 8k")   | large_client_header_buffers (http; HTTP/2 header |
|                                                  | limits since nginx 1.19.7)                       |
| ConfigMap keep-alive (75), http2-max-concurrent- | keepalive_timeout, http2_max_concurrent_streams  |
| streams (128), ssl-protocols (TLSv1.2 TLSv1.3)   | ssl_protocols                                    |
| TLS (default certificate or ingress.tls secret)  | listen 443 ssl http2; ssl_certificate            |

nginx counts client_max_body_size against the whole HTTP/2 stream, not one gRPC message, so
an `AnalyzeImages` stream dies once its requests add up to the limit (413 for a single call).
The grpc module streams request bodies (no buffering), so a stream that stays quiet meets
client_body_timeout on the client's side and grpc_read_timeout on the service's. Observed with
Debian's nginx 1.22: with the service's default 30 s keepalive PINGs, a stream quiet for 70 s
survived even the 60 s defaults; with PINGs 10 minutes apart it died after 60 s ("timed out"
in the error log), and lived with the chart's 3600 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from faceanalysis.cli.stack import free_port

# The Ingress host of the chart's values (and k8s/values-kind.yaml): the :authority clients send.
HOST = "faceanalysis.local"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ANNOTATION = "nginx.ingress.kubernetes.io/"


@dataclass(frozen=True)
class IngressSettings:
    """What ingress-nginx turns into nginx directives for one Ingress. The defaults are the
    controller's (and nginx's own) defaults: what an Ingress without annotations gets."""

    body_size: str = "1m"
    read_timeout: int = 60
    send_timeout: int = 60
    connect_timeout: int = 5
    client_body_buffer_size: str = "8k"
    client_body_timeout: int = 60  # controller-wide (ConfigMap client-body-timeout), no annotation


ROOT = Path(__file__).resolve().parents[2]
# The controller's ConfigMap as docs/deploy.md tells users to patch it (`kubectl -n ingress-nginx
# patch configmap ingress-nginx-controller --type merge -p '{"data": {...}}'`).
_CONFIGMAP_PATCH = re.compile(r"patch configmap ingress-nginx-controller\b[^\n]*(?:\\\n[^\n]*)*?-p '(\{.*?\})'")


# Annotation -> IngressSettings field; any other nginx.ingress.kubernetes.io annotation on the
# chart's Ingress fails the test, so that this proxy never silently differs from the real one.
_KNOWN = {
    "proxy-body-size": ("body_size", str),
    "proxy-read-timeout": ("read_timeout", int),
    "proxy-send-timeout": ("send_timeout", int),
    "proxy-connect-timeout": ("connect_timeout", int),
    "client-body-buffer-size": ("client_body_buffer_size", str),
}
# Annotations that change nothing for a TLS-only gRPC location.
_NO_EFFECT = {"ssl-redirect", "force-ssl-redirect", "proxy-buffering", "proxy-request-buffering"}


def settings_from_annotations(annotations: dict[str, str], client_body_timeout: int) -> IngressSettings:
    values: dict = {"client_body_timeout": client_body_timeout}
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION):
            continue
        name = key[len(ANNOTATION):]
        if name == "backend-protocol":
            assert value == "GRPC", f"{key}: {value} (the test proxies plaintext gRPC)"
        elif name in _KNOWN:
            field, kind = _KNOWN[name]
            values[field] = kind(str(value).rstrip("s") if kind is int else value)
        elif name not in _NO_EFFECT:
            raise AssertionError(f"the chart's Ingress sets {key}: teach tests/integration/edge.py what ingress-nginx "
                                 "renders for it")
    return IngressSettings(**values)


def chart_ingress_annotations() -> dict[str, str]:
    """The annotations of image-input's Ingress as the chart renders it with the Ingress on."""
    from tests.deploy.chart import render

    rendered = render({"image-input": {"ingress": {"enabled": True}}})
    # The gRPC API's Ingress (the HTTP/JSON API and web page have one of their own, plain HTTP).
    (ingress,) = [i for i in rendered.of_kind("Ingress")
                  if (i["metadata"].get("annotations") or {}).get(f"{ANNOTATION}backend-protocol") in ("GRPC", "GRPCS")]
    return {k: str(v) for k, v in (ingress["metadata"].get("annotations") or {}).items()}


def documented_controller_config(doc: Path = ROOT / "docs" / "deploy.md") -> dict[str, str]:
    """The ingress-nginx ConfigMap data docs/deploy.md tells users to set (no annotation
    reaches these: client-body-timeout, ...)."""
    match = _CONFIGMAP_PATCH.search(doc.read_text())
    assert match, f"{doc} no longer shows the `kubectl ... patch configmap ingress-nginx-controller -p '...'` command"
    return json.loads(match.group(1))["data"]


def chart_ingress_settings() -> IngressSettings:
    """What ingress-nginx makes of the chart's Ingress, on a controller set up as documented."""
    config = documented_controller_config()
    return settings_from_annotations(chart_ingress_annotations(), int(str(config["client-body-timeout"]).rstrip("s")))


# ---------------------------------------------------------------------------------------------
# TLS


def self_signed(folder: Path, names: tuple[str, ...] = (HOST, "localhost"),
                ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A throwaway self-signed server certificate and key (PEM), like ingress-nginx's default one."""
    from tests.certs import self_signed as issue

    issued = issue(folder, names[0], names, ips)
    return issued.cert, issued.key


# ---------------------------------------------------------------------------------------------
# nginx


def nginx_conf(prefix: Path, port: int, upstream: str, cert: Path, key: Path,
               settings: IngressSettings | None) -> str:
    """nginx.conf for a TLS + HTTP/2 gRPC proxy on 127.0.0.1:`port` to `upstream` (host:port).
    `settings` None leaves every tunable at nginx's default: an Ingress without annotations on a
    controller without ConfigMap changes (their defaults are nginx's: 1m, 60 s)."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the 0700 temp folders
    http_tuning = location_tuning = ""
    if settings is not None:
        http_tuning = f"""
    # controller-wide (ingress-nginx ConfigMap)
    client_body_timeout {settings.client_body_timeout}s;
    client_header_timeout 60s;
    large_client_header_buffers 4 8k;
    keepalive_timeout 75s;
    http2_max_concurrent_streams 128;"""
        location_tuning = f"""
            # the Ingress's annotations
            client_max_body_size {settings.body_size};
            client_body_buffer_size {settings.client_body_buffer_size};
            grpc_connect_timeout {settings.connect_timeout}s;
            grpc_send_timeout {settings.send_timeout}s;
            grpc_read_timeout {settings.read_timeout}s;"""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    # the tests read the status and $request_length (bytes of the whole HTTP/2 stream) last
    log_format edge '$remote_addr "$request" $status $bytes_sent $request_length';
    access_log {prefix / "access.log"} edge;
{temp}
    ssl_protocols TLSv1.2 TLSv1.3;{http_tuning}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name {HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{{location_tuning}
            grpc_set_header X-Real-IP $remote_addr;
            grpc_set_header X-Forwarded-For $remote_addr;
            grpc_set_header X-Forwarded-Proto $scheme;
            grpc_pass grpc://{upstream};
        }}
    }}
}}
"""


class ProxyProcess:
    """A proxy on a random localhost port, in its own folder (`prefix`), stopped by its PID.
    Subclasses write their configuration for `self.port` and return the command (`_command`);
    `log_name` is the log that explains a failed start. Shared by Nginx and envoy_edge.Envoy."""

    binary = ""
    hint = ""  # where the binary comes from, for the failure when it is missing
    log_name = "error.log"

    def __init__(self, prefix: Path):
        self.prefix = prefix
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read(self, name: str) -> str:
        path = self.prefix / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def log(self) -> str:
        return self._read(self.log_name)

    @property
    def access_log(self) -> str:
        """One line per request or stream, in the format the subclass's configuration sets."""
        return self._read("access.log")

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        name = type(self).__name__
        if not self.binary or not Path(self.binary).exists():
            pytest.fail(f"{name} is missing: {self.hint}")
        self.prefix.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            with open(self.prefix / "stderr", "wb") as stderr:
                self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=stderr)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            err = self._read("stderr") + self.log
            if "Address already in use" not in err:
                raise RuntimeError(f"{name} did not start:\n{err[-3000:]}")
        raise RuntimeError(f"{name} found no free port")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx: fast shutdown; Envoy: exit
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Nginx(ProxyProcess):
    """A real nginx, configured by nginx_conf."""

    binary = NGINX
    hint = "install Debian's nginx (.ci/apt-packages.txt)"

    def __init__(self, prefix: Path, upstream: str, settings: IngressSettings | None, tls: tuple[Path, Path]):
        super().__init__(prefix)
        self.upstream, self.settings, self.tls = upstream, settings, tls

    @property
    def error_log(self) -> str:
        return self.log

    def _command(self) -> list[str]:
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_conf(self.prefix, self.port, self.upstream, *self.tls, self.settings))
        return [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]


# ---------------------------------------------------------------------------------------------
# Upstreams


@contextlib.contextmanager
def spare_image_input(local_stack, workdir: Path, **env):
    """tests.support.start_image_input as a context manager: stopped afterwards."""
    from tests.support import start_image_input

    stack = start_image_input(local_stack, workdir, **env)
    try:
        yield stack
    finally:
        stack.stop()


def api_key_file(folder: Path, tenant: str = "docs") -> tuple[str, Path]:
    """A fresh API key and the hashed key file image-input reads (FACEANALYSIS_API_KEYS_FILE)."""
    from faceanalysis.runtime import auth

    key = auth.new_key()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "api-keys"
    path.write_text(f"# docs test\n{auth.format_line(auth.hash_key(key), tenant)}\n")
    return key, path


# ---------------------------------------------------------------------------------------------
# Photos and grpcurl output


def large_photo(source: Path, dest: Path, min_bytes: int, scale: int = 4) -> Path:
    """A phone-sized JPEG of at least `min_bytes`: `source` upscaled `scale` times, with a little
    seeded noise (sensor grain) until it is big enough. Same faces as the source."""
    from PIL import Image, ImageOps

    with Image.open(source) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.LANCZOS)
    noise = Image.frombytes("RGB", img.size, random.Random(0).randbytes(img.width * img.height * 3))
    for amount in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2):
        buffer = io.BytesIO()
        (Image.blend(img, noise, amount) if amount else img).save(buffer, format="JPEG", quality=95)
        if buffer.tell() >= min_bytes:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(buffer.getvalue())
            return dest
    raise AssertionError(f"could not make {source.name} reach {min_bytes} bytes")


def json_messages(text: str) -> list[dict]:
    """The JSON messages grpcurl prints one after another (streams print several)."""
    decoder, out, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        message, pos = decoder.raw_decode(text, pos)
        out.append(message)
