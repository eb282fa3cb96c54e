"""Through a real proxy: Debian's nginx terminates TLS and HTTP/2 in front of the local stack,
configured the way ingress-nginx renders the chart's image-input Ingress (annotations read from
the rendered chart, see tests/integration/edge.py for the mapping). grpcurl -insecure and the
faceanalysis CLI (--insecure --authority) must get through it with

- a 6 MB photo (one AnalyzeImage call);
- an AnalyzeImages stream of 100 photos, at least 5 MB in total, on one HTTP/2 stream;
- a stream that stays quiet for 70 s between two photos (grpcurl, and faceanalysis.client's
  Connection, the one the CLI dials with: the CLI itself never pauses a stream).

The same calls against an nginx left at its defaults (an Ingress without those annotations) fail:
413 for the photo, a broken stream for the other two. That proves each test can fail.

The 70 s streams run in the background from the start of the module, beside the other tests,
against an image-input that sends no keepalive pings meanwhile (see quiet_input).

The Envoy half, the chart's Gateway API edge through a real Envoy configured as Envoy Gateway
configures it, is tests/integration/test_envoy_edge.py (it reuses this module's fixtures).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from faceanalysis.v1 import image_input_pb2, image_input_pb2_grpc
from tests.deploy.tools import grpcurl_bin
from tests.integration.edge import (HOST, Nginx, chart_ingress_settings, json_messages, large_photo, self_signed,
                                    spare_image_input)
from tests.support import distinct_photos, image

FA = [sys.executable, "-m", "faceanalysis.cli.main"]
ANALYZE = "faceanalysis.v1.FaceAnalysis/AnalyzeImage"
ANALYZE_STREAM = "faceanalysis.v1.FaceAnalysis/AnalyzeImages"
QUIET_SECONDS = 70
SIX_MB = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def grpcurl():
    return str(grpcurl_bin())


@pytest.fixture(scope="module")
def ingress_settings():
    """The chart's Ingress annotations, and the controller ConfigMap docs/deploy.md prescribes."""
    return chart_ingress_settings()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("edge-tls"))


@pytest.fixture(scope="module")
def chart_nginx(local_stack, ingress_settings, tls, tmp_path_factory):
    """nginx as ingress-nginx runs the chart's Ingress."""
    with Nginx(tmp_path_factory.mktemp("nginx-chart"), local_stack.target("image-input"), ingress_settings, tls) as n:
        yield n


@pytest.fixture(scope="module")
def default_nginx(local_stack, tls, tmp_path_factory):
    """nginx with every tunable at its default: an Ingress with only backend-protocol: GRPC."""
    with Nginx(tmp_path_factory.mktemp("nginx-default"), local_stack.target("image-input"), None, tls) as n:
        yield n


EDGE_FLAGS = ["-insecure", "-authority", HOST]  # nginx's self-signed certificate, the Ingress host


def grpcurl_request(image_path: Path, client_ref: str = "") -> bytes:
    """One request as grpcurl reads it from stdin (-d @): protobuf JSON, bytes as base64."""
    import base64

    body = {"image": base64.b64encode(image_path.read_bytes()).decode()}
    if client_ref:
        body["client_ref"] = client_ref
    return (json.dumps(body) + "\n").encode()


def run_grpcurl(grpcurl: str, nginx: Nginx, method: str, stdin: bytes, timeout: float = 300,
                max_time: float | None = None):
    limit = ["-max-time", str(max_time)] if max_time else []
    return subprocess.run([grpcurl, *EDGE_FLAGS, *limit, "-d", "@", nginx.address, method],
                          input=stdin, capture_output=True, timeout=timeout)


def cli_through(proxy, path: Path, out: Path, *flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`faceanalysis analyze` through a proxy (nginx or Envoy) as a user aims it at the edge:
    TLS without verification, the edge's host as :authority."""
    return subprocess.run([*FA, "analyze", str(path), "--target", proxy.address, "--insecure", "--authority", HOST,
                           "--out", str(out), "--retry-seconds", "5", *flags],
                          capture_output=True, text=True, timeout=timeout)


def check_six_mb_photo_by_cli(proxy, six_mb_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli_through(proxy, six_mb_photo, out, "--skip-cache")
    assert proc.returncode == 0, proc.stderr[-3000:] + proxy.log[-2000:]
    assert "1 of 1 images analyzed" in proc.stdout
    result = json.loads((out / "two_people.json").read_text())
    assert result["image"]["sha256"] == hashlib.sha256(six_mb_photo.read_bytes()).hexdigest()
    assert len(result["faces"]) == 2


def check_hundred_photos_by_cli(proxy, folder: Path, tmp_path: Path) -> None:
    """--concurrency 1: one stream carries all 100, so no answer came from a resumed stream (each
    caller then finds that one stream in its proxy's access log)."""
    out = tmp_path / "out"
    proc = cli_through(proxy, folder, out, "--concurrency", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proxy.log[-2000:]
    assert "100 of 100 images analyzed" in proc.stdout
    assert len(list(out.glob("*.json"))) == 100


def request_length(line: str) -> int:
    """$request_length of an access log line (edge.py's log_format): bytes the client sent."""
    return int(line.rsplit(" ", 1)[1])


def access_log(nginx: Nginx, method: str) -> list[str]:
    return [line for line in nginx.access_log.splitlines() if f"POST /{method} " in line]


# ---------------------------------------------------------------------------------------------
# The quiet streams: started once for the module, in the background, checked at the end.


class GrpcurlQuietStream(threading.Thread):
    """grpcurl AnalyzeImages: one photo, its answer, `quiet` seconds of nothing, a second photo."""

    def __init__(self, grpcurl: str, nginx: Nginx, first: Path, second: Path, quiet: float):
        super().__init__(daemon=True)
        self.cmd = [grpcurl, *EDGE_FLAGS, "-d", "@", nginx.address, ANALYZE_STREAM]
        self.first, self.second, self.quiet = first, second, quiet
        self.stop = threading.Event()
        self.lines: list[str] = []
        self.first_answer = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.rc: int | None = None
        self.stderr = ""
        self.sent_second_at = self.started_at = 0.0

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if '"result"' in line:
                self.first_answer.set()

    def run(self):
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        try:
            self.proc.stdin.write(grpcurl_request(self.first, "first").decode())
            self.proc.stdin.flush()
            self.first_answer.wait(120)
            if not self.stop.wait(self.quiet) and self.proc.poll() is None:
                self.sent_second_at = time.monotonic()
                self.proc.stdin.write(grpcurl_request(self.second, "second").decode())
                self.proc.stdin.flush()
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # grpcurl ended: the stream broke
        try:
            self.rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.rc = self.proc.wait()
        reader.join(10)
        self.stderr = self.proc.stderr.read()

    def cancel(self):
        self.stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    @property
    def answers(self) -> list[dict]:
        return json_messages("".join(self.lines))


class ClientQuietStream(threading.Thread):
    """The same with faceanalysis.client's Connection (what `faceanalysis analyze --insecure
    --authority` dials with): TLS without verification, the edge's host as :authority."""

    def __init__(self, nginx: Nginx, first: Path, second: Path, quiet: float):
        super().__init__(daemon=True)
        self.nginx, self.first, self.second, self.quiet = nginx, first, second, quiet
        self.stop = threading.Event()
        self.answers: list[image_input_pb2.AnalyzeImagesResponse] = []
        self.error: grpc.RpcError | None = None
        self.call = None

    def _requests(self, first_answer: threading.Event):
        yield image_input_pb2.AnalyzeImageRequest(image=self.first.read_bytes(), client_ref="first")
        first_answer.wait(120)
        if not self.stop.wait(self.quiet):
            yield image_input_pb2.AnalyzeImageRequest(image=self.second.read_bytes(), client_ref="second")

    def run(self):
        import warnings

        from faceanalysis.client import Connection

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the InsecureWarning of insecure=True
            channel = Connection(self.nginx.address, insecure=True, authority=HOST).channel()
        first_answer = threading.Event()
        try:
            self.call = image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImages(
                self._requests(first_answer), timeout=self.quiet + 180)
            for answer in self.call:
                self.answers.append(answer)
                first_answer.set()
        except grpc.RpcError as err:
            self.error = err
        finally:
            first_answer.set()
            channel.close()

    def cancel(self):
        self.stop.set()
        if self.call is not None:
            self.call.cancel()


@pytest.fixture(scope="module")
def quiet_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet")
    return distinct_photos(folder, 2, longest_side=800)


@pytest.fixture(scope="module")
def quiet_input(local_stack, tmp_path_factory):
    """One more image-input, wired to the shared stack's peers, that pings its connections only
    every 10 minutes. With the default 30 s keepalive the service's PINGs keep nginx's timers
    from firing: a 70 s quiet stream then outlives even nginx's 60 s defaults and proves
    nothing. Here only the proxy's timeouts decide."""
    with spare_image_input(local_stack, tmp_path_factory.mktemp("quiet-input"),
                           FACEANALYSIS_KEEPALIVE_SECONDS="600") as stack:
        yield stack


@pytest.fixture(scope="module", autouse=True)
def quiet_streams(grpcurl, quiet_input, ingress_settings, tls, quiet_photos, tmp_path_factory):
    """Starts the 70 s streams at once, so that they run beside the other tests of this module:
    grpcurl and faceanalysis.client through nginx as the chart sets it up, and the same two
    through nginx's defaults."""
    first, second = quiet_photos
    upstream = quiet_input.target("image-input")
    chart = Nginx(tmp_path_factory.mktemp("nginx-quiet-chart"), upstream, ingress_settings, tls).start()
    default = Nginx(tmp_path_factory.mktemp("nginx-quiet-default"), upstream, None, tls).start()
    streams = {
        "grpcurl": GrpcurlQuietStream(grpcurl, chart, first, second, QUIET_SECONDS),
        "client": ClientQuietStream(chart, first, second, QUIET_SECONDS),
        "grpcurl-default": GrpcurlQuietStream(grpcurl, default, first, second, QUIET_SECONDS),
        "client-default": ClientQuietStream(default, first, second, QUIET_SECONDS),
    }
    try:
        for stream in streams.values():
            stream.start()
        yield {"streams": streams, "chart": chart, "default": default}
    finally:
        for stream in streams.values():
            stream.cancel()
        for stream in streams.values():
            stream.join(15)
        chart.stop()
        default.stop()


# ---------------------------------------------------------------------------------------------
# (a) a 6 MB photo


@pytest.fixture(scope="module")
def six_mb_photo(tmp_path_factory):
    return large_photo(image("face_recognition/two_people.jpg"), tmp_path_factory.mktemp("six") / "two_people.jpg",
                       SIX_MB)


def test_six_mb_photo_through_chart_edge_with_grpcurl(grpcurl, chart_nginx, six_mb_photo):
    proc = run_grpcurl(grpcurl, chart_nginx, ANALYZE, grpcurl_request(six_mb_photo))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + chart_nginx.error_log[-2000:]
    (answer,) = json_messages(proc.stdout.decode())
    result = answer["result"]
    assert result["image"]["sha256"] == hashlib.sha256(six_mb_photo.read_bytes()).hexdigest()
    assert (result["image"]["width"], result["image"]["height"]) == (4504, 2644)
    assert len(result["faces"]) == 2  # two_people.jpg: Obama and Biden
    assert all(f["gender"]["label"] == "GENDER_MAN" and len(f["landmarks"]) == 68 for f in result["faces"])
    (line,) = access_log(chart_nginx, ANALYZE)
    assert '" 200 ' in line


def test_six_mb_photo_through_chart_edge_with_cli(chart_nginx, six_mb_photo, tmp_path):
    check_six_mb_photo_by_cli(chart_nginx, six_mb_photo, tmp_path)


def test_six_mb_photo_fails_through_default_nginx(grpcurl, default_nginx, six_mb_photo, tmp_path):
    """ingress-nginx's (and nginx's) default body limit, 1m: what the chart's annotations fix."""
    proc = run_grpcurl(grpcurl, default_nginx, ANALYZE, grpcurl_request(six_mb_photo))
    assert proc.returncode != 0
    assert "413 (Request Entity Too Large)" in proc.stderr.decode()
    assert "too large" in default_nginx.error_log

    proc = subprocess.run([*FA, "analyze", str(six_mb_photo), "--target", default_nginx.address, "--insecure",
                           "--authority", HOST, "--out", str(tmp_path / "out"), "--retry-seconds", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "0 of 1 images analyzed" in proc.stdout
    assert "413" in proc.stderr


# ---------------------------------------------------------------------------------------------
# (b) 100 photos, 5 MB and more, on one stream


@pytest.fixture(scope="module")
def hundred_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hundred")
    files = distinct_photos(folder, 100)
    total = sum(f.stat().st_size for f in files)
    assert total >= 5 * 1000 * 1000, total
    return folder, files


def stream_input(files: list[Path]) -> bytes:
    return b"".join(grpcurl_request(f, f.name) for f in files)


def test_hundred_photo_stream_through_chart_edge_with_grpcurl(grpcurl, chart_nginx, hundred_photos):
    folder, files = hundred_photos
    proc = run_grpcurl(grpcurl, chart_nginx, ANALYZE_STREAM, stream_input(files), timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + chart_nginx.error_log[-2000:]
    answers = json_messages(proc.stdout.decode())
    assert len(answers) == 100
    assert sorted(a["client_ref"] for a in answers) == sorted(f.name for f in files)
    assert sorted(a.get("index", 0) for a in answers) == list(range(100))  # grpcurl omits index 0
    assert all("result" in a and "error" not in a for a in answers), [a.get("error") for a in answers]
    line = [line for line in access_log(chart_nginx, ANALYZE_STREAM) if request_length(line) > 1_000_000][-1]
    assert '" 200 ' in line and request_length(line) >= 5 * 1000 * 1000, line  # one HTTP/2 stream


def test_hundred_photo_stream_through_chart_edge_with_cli(chart_nginx, hundred_photos, tmp_path):
    """One stream (--concurrency 1) carries all 100: nginx's access log shows a single
    AnalyzeImages request of more than 5 MB, so no answer came from a resumed stream."""
    folder, files = hundred_photos
    before = len(access_log(chart_nginx, ANALYZE_STREAM))
    check_hundred_photos_by_cli(chart_nginx, folder, tmp_path)
    # Streams over 1 MB that ended meanwhile (the quiet streams carry less): only the CLI's.
    lines = [line for line in access_log(chart_nginx, ANALYZE_STREAM)[before:] if request_length(line) > 1_000_000]
    assert len(lines) == 1 and '" 200 ' in lines[0], lines
    assert request_length(lines[0]) >= 5 * 1000 * 1000, lines[0]


def test_hundred_photo_stream_breaks_through_default_nginx(grpcurl, default_nginx, hundred_photos):
    folder, files = hundred_photos
    # Sometimes nginx, past its 1 MiB, stops relaying without resetting the stream, and grpcurl
    # then waits until image-input closes the aged connection (max age + grace: 7 minutes). The
    # chart's edge carries the same stream in seconds, so two minutes bound the wait, not the outcome.
    proc = run_grpcurl(grpcurl, default_nginx, ANALYZE_STREAM, stream_input(files), timeout=600, max_time=120)
    assert proc.returncode != 0
    answers = json_messages(proc.stdout.decode())
    assert len(answers) < 100
    print(f"default nginx: {len(answers)} answers, then {proc.stderr.decode().strip()!r}")


# ---------------------------------------------------------------------------------------------
# (c) a stream quiet for 70 s


@pytest.mark.slow
def test_stream_quiet_for_70_seconds(quiet_streams):
    streams, chart, default = quiet_streams["streams"], quiet_streams["chart"], quiet_streams["default"]
    for stream in streams.values():
        stream.join(QUIET_SECONDS + 240)
        assert not stream.is_alive()

    # Through the chart's edge: both photos answered, the second one sent after the quiet.
    piped = streams["grpcurl"]
    assert piped.rc == 0, piped.stderr + chart.error_log[-2000:]
    assert [a["client_ref"] for a in piped.answers] == ["first", "second"]
    assert all("result" in a for a in piped.answers)
    assert piped.sent_second_at - piped.started_at >= QUIET_SECONDS

    client = streams["client"]
    assert client.error is None, f"{client.error}\n{chart.error_log[-2000:]}"
    assert [a.client_ref for a in client.answers] == ["first", "second"]
    assert all(a.HasField("result") for a in client.answers)

    # Through nginx's defaults: the first photo is answered, then the stream dies in the quiet
    # (60 s: client_body_timeout and grpc_read_timeout).
    piped = streams["grpcurl-default"]
    assert [a["client_ref"] for a in piped.answers] == ["first"], piped.answers
    assert piped.rc != 0
    client = streams["client-default"]
    assert [a.client_ref for a in client.answers] == ["first"]
    assert client.error is not None
    # That nginx's own timer ended it, not something else on the way. Two timers race here:
    # grpc_read_timeout logs "upstream timed out"; client_body_timeout, read on grpc_pass's
    # unbuffered body, logs nothing, but nginx then resets the stream with PROTOCOL_ERROR, the code
    # ngx_http_v2_close_stream sends only for a connection whose timer fired (INTERNAL_ERROR else).
    timer_reset = ("RST_STREAM with error code: PROTOCOL_ERROR" in piped.stderr
                   and "error code 1" in client.error.details())
    assert "timed out" in default.error_log or timer_reset, (
        f"grpcurl: {piped.stderr.strip()!r}; client: {client.error.code().name} {client.error.details()!r}\n"
        f"nginx error log:\n{default.error_log[-2000:]}\nnginx access log:\n{default.access_log[-1000:]}")
    print(f"default nginx after 60 s of quiet: grpcurl {piped.stderr.strip()!r}; client {client.error.code().name} "
          f"{client.error.details()!r}")
