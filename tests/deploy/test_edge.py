"""The public edge of the chart, rendered with the real Helm (Helm SDK): the Gateway API objects
(GRPCRoute, Gateway, BackendTLSPolicy) against the Gateway API CRD schemas in
../shared/schemas/crds, the cert-manager objects, Envoy Gateway's timeout policy, the Ingress
annotations, the API key Secret and the TLS wiring of every service.

kubernetes-validate knows only built-in kinds, so the custom ones are checked here. The CRD
schemas leave unknown fields open (the API server prunes them); like `kubectl apply
--validate=strict`, the check here refuses them, so a misspelt field fails instead of vanishing.
No cert-manager CRD schema is kept in ../shared/schemas: CERT_MANAGER below is the part of
cert-manager.io/v1 the chart uses (Certificate, Issuer), written from cert-manager's API reference.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re

import helm_python as helm
import jsonschema
import pytest
import yaml

from .chart import CHART, NAMESPACE, RELEASE, ROOT, SERVICES, render

CRDS = ROOT.parent / "shared" / "schemas" / "crds"
GATEWAY_API = {"Gateway": "gateway-gateway-v1.json", "GRPCRoute": "grpcroute-gateway-v1.json",
               "HTTPRoute": "httproute-gateway-v1.json", "BackendTLSPolicy": "backendtlspolicy-gateway-v1.json"}
PUBLIC_SERVICES = {"faceanalysis.v1.FaceAnalysis", "grpc.health.v1.Health",
                   "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
INGRESS_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
    "nginx.ingress.kubernetes.io/proxy-body-size": "0",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
}
TLS_DIR = "/etc/faceanalysis/tls"
II = f"{RELEASE}-image-input"


# --- schemas ------------------------------------------------------------------------------------

def _strict(schema):
    """The schema with `additionalProperties: false` on every object that lists its properties and
    does not keep unknown fields (x-kubernetes-preserve-unknown-fields)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _crd_schema(kind: str) -> dict:
    schema = json.loads((CRDS / GATEWAY_API[kind]).read_text())
    # metadata is checked by Kubernetes itself (and kubernetes-validate for built-in kinds).
    schema["properties"]["metadata"] = {"type": "object"}
    return _strict(schema)


_STR, _STRS = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
_ISSUER_REF = {"type": "object", "required": ["name"], "properties": {
    "name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR}}
_USAGES = ["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
           "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
           "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
           "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]
CERT_MANAGER = {
    "Certificate": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["secretName", "issuerRef"], "properties": {
            "secretName": _STR, "commonName": {"type": "string", "maxLength": 64}, "dnsNames": _STRS,
            "ipAddresses": _STRS, "isCA": {"type": "boolean"}, "duration": _STR, "renewBefore": _STR,
            "usages": {"type": "array", "items": {"enum": _USAGES}},
            "privateKey": {"type": "object", "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "size": {"type": "integer"}, "rotationPolicy": {"enum": ["Never", "Always"]}}},
            "issuerRef": _ISSUER_REF}}}},
    "Issuer": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Issuer"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "selfSigned": {"type": "object", "properties": {"crlDistributionPoints": _STRS}},
            "ca": {"type": "object", "required": ["secretName"], "properties": {"secretName": _STR}}}}}},
}


def _errors(validator, doc) -> list[str]:
    return [f"{doc['kind']}/{doc['metadata']['name']} .{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_gateway_api_objects_match_the_crd_schemas(rendered_variants):
    validators = {kind: jsonschema.Draft7Validator(_crd_schema(kind)) for kind in GATEWAY_API}
    seen, problems = set(), []
    for variant, r in rendered_variants.items():
        for doc in r.docs:
            if doc["apiVersion"].startswith("gateway.networking.k8s.io/"):
                assert doc["apiVersion"] == "gateway.networking.k8s.io/v1", (variant, doc["kind"])
                problems += [f"{variant}: {e}" for e in _errors(validators[doc["kind"]], doc)]
                seen.add(doc["kind"])
    assert not problems, "\n".join(problems)
    assert seen == set(GATEWAY_API)  # every kind the chart can render was checked


def test_the_strict_schema_catches_a_misspelt_field(default_render):
    route = copy.deepcopy(default_render.get("GRPCRoute", II))
    route["spec"]["rules"][0]["backendRef"] = route["spec"]["rules"][0].pop("backendRefs")
    assert _errors(jsonschema.Draft7Validator(_crd_schema("GRPCRoute")), route)


def test_cert_manager_objects_match_their_schema(rendered_variants):
    validators = {kind: jsonschema.Draft7Validator(_strict(schema)) for kind, schema in CERT_MANAGER.items()}
    seen, problems = set(), []
    for variant, r in rendered_variants.items():
        for doc in r.docs:
            if doc["apiVersion"].startswith("cert-manager.io/"):
                problems += [f"{variant}: {e}" for e in _errors(validators[doc["kind"]], doc)]
                seen.add(doc["kind"])
    assert not problems, "\n".join(problems)
    assert seen == set(CERT_MANAGER)


# --- the GRPCRoute and its Gateway ------------------------------------------------------------------

def _container(r, name=II):
    return r.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_route_sends_the_public_services_to_the_grpc_port(rendered):
    from faceanalysis.runtime import services as fa_services

    routes = rendered.of_kind("GRPCRoute")
    if not rendered.values.get("image-input", {}).get("gateway", {}).get("enabled", True):
        assert not routes
        return
    (route,) = routes
    (rule,) = route["spec"]["rules"]
    assert {m["method"]["service"] for m in rule["matches"]} == PUBLIC_SERVICES
    assert all(m["method"]["type"] == "Exact" and "method" not in m["method"] for m in rule["matches"])
    assert fa_services.IMAGE_INPUT.grpc_service in PUBLIC_SERVICES
    (backend,) = rule["backendRefs"]
    assert backend["kind"] == "Service" and backend["group"] == "" and "namespace" not in backend
    # The ClusterIP Service of image-input, on the port whose target is the container's gRPC port.
    service = rendered.get("Service", backend["name"])
    assert service["spec"]["selector"]["app.kubernetes.io/name"] == "image-input"
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
    assert port["name"] == "grpc" and port["targetPort"] == "grpc"
    container_ports = {p["name"]: p["containerPort"] for p in _container(rendered)["ports"]}
    assert container_ports["grpc"] == backend["port"] == fa_services.IMAGE_INPUT.grpc_port


def test_route_attaches_to_the_gateway_the_chart_creates(default_render):
    route, gateway = default_render.get("GRPCRoute", II), default_render.get("Gateway", II)
    (parent,) = route["spec"]["parentRefs"]
    (listener,) = gateway["spec"]["listeners"]
    assert parent == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": II,
                      "sectionName": listener["name"]}
    assert gateway["spec"]["gatewayClassName"] == "eg"
    assert listener["protocol"] == "HTTPS" and listener["port"] == 443
    assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert route["metadata"]["namespace"] == gateway["metadata"]["namespace"] == NAMESPACE
    assert route["spec"]["hostnames"] == ["faceanalysis.local"]
    assert listener["tls"]["mode"] == "Terminate"
    (ref,) = listener["tls"]["certificateRefs"]
    assert ref["kind"] == "Secret" and ref["group"] == ""
    # No issuer and no Secret given: a self-signed certificate for the route's host names.
    secret = default_render.get("Secret", ref["name"])
    assert secret["type"] == "kubernetes.io/tls"
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "faceanalysis.local" in names
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])


def test_route_on_an_existing_gateway(rendered_variants):
    r = rendered_variants["existing-gateway"]
    (parent,) = r.get("GRPCRoute", II)["spec"]["parentRefs"]
    assert parent == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shared",
                      "namespace": "gateways", "sectionName": "grpc"}
    assert not r.of_kind("Gateway") and not r.of_kind("BackendTrafficPolicy")
    assert not [s for s in r.of_kind("Secret") if s.get("type") == "kubernetes.io/tls"]
    assert "gateways" in r.notes and "get gateway shared" in r.notes


def test_a_route_needs_a_gateway():
    with pytest.raises(helm.HelmError, match="parentRef"):
        render({"image-input": {"gateway": {"create": {"enabled": False}}}})


def test_gateway_certificate_from_cert_manager(rendered_variants):
    r = rendered_variants["gateway-cert-manager"]
    gateway = r.get("Gateway", II)
    (listener,) = gateway["spec"]["listeners"]
    assert listener["hostname"] == "faces.example.com"
    (cert,) = [c for c in r.of_kind("Certificate") if c["metadata"]["name"] == f"{II}-gateway"]
    assert cert["spec"]["secretName"] == listener["tls"]["certificateRefs"][0]["name"]
    assert cert["spec"]["dnsNames"] == r.get("GRPCRoute", II)["spec"]["hostnames"] == ["faces.example.com"]
    assert cert["spec"]["issuerRef"] == {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "server auth" in cert["spec"]["usages"]
    assert not [s for s in r.of_kind("Secret") if s.get("type") == "kubernetes.io/tls"]  # cert-manager makes it
    assert "-insecure" not in r.notes


def test_envoy_gateway_route_timeout(rendered_variants):
    policy = rendered_variants["default"].get("BackendTrafficPolicy", II)
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    routes = [("GRPCRoute", II), ("HTTPRoute", f"{II}-http")]
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": kind, "name": name}
                                            for kind, name in routes]
    # Envoy's 15 s default route timeout would cut slow calls and stream tails.
    assert policy["spec"]["timeout"] == {"http": {"requestTimeout": "3600s"}}
    assert not rendered_variants["existing-gateway"].of_kind("BackendTrafficPolicy")


# --- the Ingress --------------------------------------------------------------------------------

def test_ingress_carries_the_annotations(rendered_variants):
    assert not rendered_variants["default"].of_kind("Ingress")
    ingress = rendered_variants["ingress"].get("Ingress", II)
    assert ingress["metadata"]["annotations"] == INGRESS_ANNOTATIONS
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert not rendered_variants["ingress"].of_kind("GRPCRoute")
    notes = rendered_variants["ingress"].notes
    assert 'client-body-timeout to "3600"' in notes and "Ingress" in notes
    # NOTES.txt names the annotations the chart set, with their values.
    for key, value in INGRESS_ANNOTATIONS.items():
        assert f'{key.removeprefix("nginx.ingress.kubernetes.io/")}: "{value}"' in notes, key
    # With TLS on the pods, nginx dials them with TLS.
    tls = rendered_variants["internal-tls"].get("Ingress", II)["metadata"]["annotations"]
    assert tls == {**INGRESS_ANNOTATIONS, "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS"}


def test_ingress_annotations_comment_each_setting():
    text = (CHART / "charts" / "image-input" / "templates" / "_helpers.tpl").read_text()
    lines = text.splitlines()
    for key in INGRESS_ANNOTATIONS:
        (i,) = [n for n, line in enumerate(lines) if line.strip().startswith(key + ":")]
        assert lines[i - 1].strip().startswith("#"), f"{key} has no comment saying why"


def test_ingress_extra_annotations_and_overrides():
    extra = {"cert-manager.io/cluster-issuer": "letsencrypt"}
    r = render({"image-input": {"ingress": {"enabled": True, "annotations": extra, "timeoutSeconds": 600}}})
    annotations = r.get("Ingress", II)["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "600"
    with pytest.raises(helm.HelmError, match="proxy-body-size"):
        render({"image-input": {"ingress": {"enabled": True,
                                            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}}}})


def _edge_peers(r) -> set[str]:
    np = r.get("NetworkPolicy", II)
    names = set()
    for rule in np["spec"]["ingress"]:
        if 50050 in {p["port"] for p in rule["ports"]}:
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    names.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    return names


def test_network_policy_admits_the_edge_in_use(rendered_variants):
    assert _edge_peers(rendered_variants["default"]) == {"envoy-gateway-system"}
    assert _edge_peers(rendered_variants["ingress"]) == {"ingress-nginx"}
    assert _edge_peers(rendered_variants["internal-tls"]) == {"envoy-gateway-system", "ingress-nginx"}
    envoy = [peer for rule in rendered_variants["default"].get("NetworkPolicy", II)["spec"]["ingress"]
             for peer in rule["from"] if "namespaceSelector" in peer]
    assert envoy[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "envoy",
                                                       "app.kubernetes.io/component": "proxy"}


# --- the HTTP/JSON API and web page beside gRPC ----------------------------------------------------

HTTP_PATHS = [("PathPrefix", "/v1"), ("Exact", "/openapi.json"), ("Exact", "/"), ("PathPrefix", "/web")]


def _http_port(r) -> int:
    """The Service port named http of image-input, after checking it targets the container's http port."""
    from faceanalysis.runtime.config import Settings

    container = _container(r)
    (port,) = [p for p in r.get("Service", II)["spec"]["ports"] if p["name"] == "http"]
    assert port["targetPort"] == "http"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == port["port"]
    default = Settings.model_fields["http_port"].default
    assert _env(container)["FACEANALYSIS_HTTP_PORT"] == str(port["port"]) == str(default)
    return port["port"]


def test_http_route_beside_the_grpc_route(rendered_variants):
    for variant in ("default", "existing-gateway", "gateway-cert-manager", "internal-tls"):
        r = rendered_variants[variant]
        grpc, http = r.get("GRPCRoute", II), r.get("HTTPRoute", f"{II}-http")
        # The same Gateway and listener, the same host names.
        assert http["spec"]["parentRefs"] == grpc["spec"]["parentRefs"], variant
        assert http["spec"]["hostnames"] == grpc["spec"]["hostnames"], variant
        (rule,) = http["spec"]["rules"]
        assert [(m["path"]["type"], m["path"]["value"]) for m in rule["matches"]] == HTTP_PATHS
        (backend,) = rule["backendRefs"]
        assert backend == {"group": "", "kind": "Service", "name": II, "port": _http_port(r)}
    # No HTTP path can swallow a gRPC call (POST /<package>.<Service>/<Method>).
    for service in PUBLIC_SERVICES:
        path = f"/{service}/Method"
        assert not [v for kind, v in HTTP_PATHS if path == v or (kind == "PathPrefix" and path.startswith(v + "/"))]


def test_http_route_host_names_of_its_own():
    """For a controller that accepts only one of an HTTPRoute and a GRPCRoute per host name."""
    r = render({"image-input": {"gateway": {"http": {"hostnames": ["web.faces.example.com"]}}}})
    assert r.get("HTTPRoute", f"{II}-http")["spec"]["hostnames"] == ["web.faces.example.com"]
    assert r.get("GRPCRoute", II)["spec"]["hostnames"] == ["faceanalysis.local"]


def test_http_ingress_for_the_same_host(rendered_variants):
    for variant, protocol in (("ingress", "HTTP"), ("internal-tls", "HTTPS")):
        r = rendered_variants[variant]
        grpc, http = r.get("Ingress", II), r.get("Ingress", f"{II}-http")
        annotations = http["metadata"]["annotations"]
        # Plain HTTP to the pods (HTTPS when they serve TLS), with the gRPC Ingress' body size and timeouts.
        protocol_key = "nginx.ingress.kubernetes.io/backend-protocol"
        assert annotations == {**grpc["metadata"]["annotations"], protocol_key: protocol}
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
        assert http["spec"].get("tls") == grpc["spec"].get("tls")
        assert http["spec"]["ingressClassName"] == grpc["spec"]["ingressClassName"]
        ((rule,), (grpc_rule,)) = http["spec"]["rules"], grpc["spec"]["rules"]
        assert rule["host"] == grpc_rule["host"]
        paths = rule["http"]["paths"]
        assert [({"Prefix": "PathPrefix"}.get(p["pathType"], p["pathType"]), p["path"]) for p in paths] == HTTP_PATHS
        port = _http_port(r)
        for path in paths:
            assert path["backend"]["service"] == {"name": II, "port": {"name": "http"}}
        assert [p for p in r.get("Service", II)["spec"]["ports"] if p["name"] == "http"][0]["port"] == port


def test_network_policy_lets_the_edge_reach_the_http_port(rendered_variants):
    http = _http_port(rendered_variants["default"])
    for variant in ("default", "ingress", "internal-tls"):
        np = rendered_variants[variant].get("NetworkPolicy", II)
        public = [rule for rule in np["spec"]["ingress"] if 50050 in {p["port"] for p in rule["ports"]}]
        edge = [rule for rule in public if any("namespaceSelector" in p for p in rule["from"])]
        assert edge and all({p["port"] for p in rule["ports"]} == {50050, http} for rule in edge), variant
        # The other services (and the helm test Pod) only ever call gRPC.
        internal = [rule for rule in public if all(set(p) == {"podSelector"} for p in rule["from"])]
        assert all({p["port"] for p in rule["ports"]} == {50050} for rule in internal), variant


def test_readiness_is_grpc_health_whatever_http_does(rendered_variants):
    for variant in ("default", "http-off"):
        container = _container(rendered_variants[variant])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" in container[probe] and "httpGet" not in container[probe]


def test_http_off_serves_grpc_only(rendered_variants):
    r = rendered_variants["http-off"]
    container = _container(r)
    assert _env(container)["FACEANALYSIS_HTTP_PORT"] == "0"
    assert "http" not in {p["name"] for p in container["ports"]}
    assert {p["name"] for p in r.get("Service", II)["spec"]["ports"]} == {"grpc"}
    assert not r.of_kind("HTTPRoute")
    assert r.get("BackendTrafficPolicy", II)["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": II}]
    off_ingress = render({"image-input": {"http": {"enabled": False}, "ingress": {"enabled": True}}})
    assert [i["metadata"]["name"] for i in off_ingress.of_kind("Ingress")] == [II]
    assert "8080" not in r.notes and "8080" in rendered_variants["default"].notes


# --- API keys -------------------------------------------------------------------------------------

def _keys_mount(r):
    pod = r.get("Deployment", II)["spec"]["template"]["spec"]
    mounts = [m for m in pod["containers"][0].get("volumeMounts", []) if m["name"] == "api-keys"]
    volumes = [v for v in pod.get("volumes", []) if v["name"] == "api-keys"]
    return mounts, volumes


def _test_pod_key(r):
    pod = r.get("Pod", f"{RELEASE}-api-test")
    analyze = pod["spec"]["containers"][0]
    return [e for e in analyze.get("env", []) if e["name"] == "FACEANALYSIS_API_KEY"]


def test_api_key_generated_when_none_is_given(default_render):
    from faceanalysis.runtime import auth

    secret = default_render.get("Secret", f"{II}-api-keys")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    assert re.fullmatch(r"fa_[A-Za-z0-9]{40}", key)
    text = base64.b64decode(secret["data"]["api-keys"]).decode()
    (line,) = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert line == f"{hashlib.sha256(key.encode()).hexdigest()} default"
    # The service's own parser reads the file and finds the key (tenant default, every scope).
    (entry,) = auth.parse(text, "api-keys")
    found = auth.KeyRing([entry]).find(key)
    assert found is not None and found.tenant == "default" and set(found.scopes) == set(auth.SCOPES)
    assert key not in text
    # Mounted as a file, only the hashed lines.
    (mount,), (volume,) = _keys_mount(default_render)
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == f"{II}-api-keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]
    assert _env(_container(default_render))["FACEANALYSIS_API_KEYS_FILE"] == f"{mount['mountPath']}/api-keys"
    # `helm test` sends the plain key, from the Secret.
    (env,) = _test_pod_key(default_render)
    assert env["valueFrom"]["secretKeyRef"] == {"name": f"{II}-api-keys", "key": "api-key", "optional": False}


def test_api_key_from_an_existing_secret(rendered_variants):
    r = rendered_variants["existing-api-keys"]
    assert not [s for s in r.of_kind("Secret") if "api-keys" in (s.get("data") or {})]
    (_,), (volume,) = _keys_mount(r)
    assert volume["secret"]["secretName"] == "my-api-keys"
    assert "FACEANALYSIS_API_KEYS_FILE" in _env(_container(r))
    (env,) = _test_pod_key(r)
    assert env["valueFrom"]["secretKeyRef"] == {"name": "my-api-keys", "key": "api-key", "optional": True}
    assert "my-api-keys" in r.notes and "faceanalysis keys create" in r.notes


def test_api_keys_off(rendered_variants):
    r = rendered_variants["auth-off"]
    assert not [s for s in r.of_kind("Secret") if "api-keys" in (s.get("data") or {})]
    assert _keys_mount(r) == ([], [])
    assert "FACEANALYSIS_API_KEYS_FILE" not in _env(_container(r))
    assert not _test_pod_key(r)
    assert "API keys are off" in r.notes and "authorization: Bearer" not in r.notes


def test_api_key_tenant_is_checked():
    r = render({"image-input": {"auth": {"tenant": "acme-1"}}})
    text = base64.b64decode(r.get("Secret", f"{II}-api-keys")["data"]["api-keys"]).decode()
    assert text.rstrip().endswith(" acme-1")
    with pytest.raises(helm.HelmError):
        render({"image-input": {"auth": {"tenant": "Acme_1"}}})


def test_only_the_key_secret_holds_the_key(rendered):
    """The plain key reaches no pod spec and no other object (only the `helm test` Pod's secretKeyRef)."""
    keys = [base64.b64decode(s["data"]["api-key"]).decode() for s in rendered.of_kind("Secret")
            if "api-key" in (s.get("data") or {})]
    others = yaml.safe_dump_all([d for d in rendered.docs if d["kind"] != "Secret"]) + rendered.notes
    assert not [k for k in keys if k in others]


# --- TLS inside the cluster ---------------------------------------------------------------------

def test_tls_wiring(rendered_variants):
    from faceanalysis.runtime import services as fa_services

    r = rendered_variants["internal-tls"]
    certs = {c["spec"]["secretName"]: c for c in r.of_kind("Certificate")}
    image_input_env = _env(_container(r))
    for service in SERVICES:
        name = f"{RELEASE}-{service}"
        container = _container(r, name)
        pod = r.get("Deployment", name)["spec"]["template"]["spec"]
        env = _env(container)
        spec = fa_services.get(service)
        # The certificate Secret, mounted read-only where the env points.
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert mount == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
        cert = certs[volume["secret"]["secretName"]]
        assert env["FACEANALYSIS_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert env["FACEANALYSIS_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
        # Its names: the Service (Gateway, Ingress, port-forward) and the headless one peers dial.
        assert {name, f"{name}.{NAMESPACE}.svc.cluster.local",
                f"{name}-headless.{NAMESPACE}.svc.cluster.local"} <= set(cert["spec"]["dnsNames"])
        if spec.name == "image-input":
            # Reached from the edge and `helm test`: no client certificate asked; dials peers with TLS.
            assert "FACEANALYSIS_TLS_CLIENT_CA_FILE" not in env
            assert env["FACEANALYSIS_PEER_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        else:
            # mTLS: only callers with a certificate of the release CA.
            assert env["FACEANALYSIS_TLS_CLIENT_CA_FILE"] == f"{TLS_DIR}/ca.crt"
            assert "FACEANALYSIS_PEER_CA_FILE" not in env
            # The host image-input dials is on the certificate.
            target = image_input_env[f"FACEANALYSIS_{service.split('-')[1].upper()}_TARGET"]
            host = target.removeprefix("dns:///").rsplit(":", 1)[0]
            assert host in cert["spec"]["dnsNames"], (service, host)
        # Probes move to the plaintext health-only port.
        health = int(env["FACEANALYSIS_HEALTH_PORT"])
        assert health != spec.grpc_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == health
    # Redis keeps its password and no certificate.
    assert not [v for v in r.get("StatefulSet", f"{RELEASE}-redis")["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "tls"]


def test_tls_off_by_default(default_render):
    assert not default_render.of_kind("Certificate") and not default_render.of_kind("Issuer")
    for service in SERVICES:
        env = _env(_container(default_render, f"{RELEASE}-{service}"))
        assert not [n for n in env if "TLS" in n or n in ("FACEANALYSIS_PEER_CA_FILE", "FACEANALYSIS_HEALTH_PORT")]


def test_tls_ca_chain(rendered_variants):
    r = rendered_variants["internal-tls"]
    issuers = {i["metadata"]["name"]: i for i in r.of_kind("Issuer")}
    certs = {c["metadata"]["name"]: c for c in r.of_kind("Certificate")}
    ca_issuer = issuers[f"{RELEASE}-ca"]["spec"]["ca"]
    ca_cert = certs[f"{RELEASE}-ca"]["spec"]
    assert ca_cert["isCA"] is True and ca_cert["secretName"] == ca_issuer["secretName"]
    assert "selfSigned" in issuers[ca_cert["issuerRef"]["name"]]["spec"]
    for name, cert in certs.items():
        if name != f"{RELEASE}-ca":
            assert cert["spec"]["issuerRef"] == {"name": f"{RELEASE}-ca", "kind": "Issuer", "group": "cert-manager.io"}
    # The CA's own key is mounted by no pod.
    from .chart import pod_specs
    mounted = {v["secret"]["secretName"] for _, _, spec in pod_specs(r) for v in spec.get("volumes", []) if "secret" in v}
    assert ca_issuer["secretName"] not in mounted


def test_tls_with_your_issuer():
    r = render({"global": {"tls": {"enabled": True, "mtls": False,
                                   "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert not r.of_kind("Issuer")
    assert {c["spec"]["issuerRef"]["name"] for c in r.of_kind("Certificate")} == {"corp-ca"}
    for service in SERVICES:
        assert "FACEANALYSIS_TLS_CLIENT_CA_FILE" not in _env(_container(r, f"{RELEASE}-{service}"))


def test_tls_edge_and_helm_test(rendered_variants):
    r = rendered_variants["internal-tls"]
    # The Gateway dials image-input with TLS and checks its certificate.
    policy = r.get("BackendTLSPolicy", II)
    # The whole Service: gRPC and the HTTPS of the HTTP API (one target, as the API advises).
    assert policy["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": II}]
    image_input_cert = next(c for c in r.of_kind("Certificate") if c["metadata"]["name"] == f"{II}-tls")
    assert policy["spec"]["validation"]["hostname"] in image_input_cert["spec"]["dnsNames"]
    assert policy["spec"]["validation"]["caCertificateRefs"] == [{"group": "", "kind": "Secret", "name": f"{II}-tls"}]
    # `helm test` verifies image-input against the release CA, from a client certificate of its own.
    pod = r.get("Pod", f"{RELEASE}-api-test")["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    test_cert = next(c for c in r.of_kind("Certificate") if c["spec"]["secretName"] == volume["secret"]["secretName"])
    assert test_cert["spec"]["usages"] == ["digital signature", "client auth"]
    for c in pod["initContainers"] + pod["containers"]:
        assert _env(c)["FACEANALYSIS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in c["volumeMounts"]
        target = c["command"][c["command"].index("--target") + 1]
        assert target.rsplit(":", 1)[0] in image_input_cert["spec"]["dnsNames"]


# --- NOTES.txt ------------------------------------------------------------------------------------

def test_notes_tell_how_to_read_the_key_and_call_the_gateway(default_render):
    notes = default_render.notes
    assert (f"KEY=$(kubectl -n {NAMESPACE} get secret {II}-api-keys -o jsonpath='{{.data.api-key}}' | base64 -d)"
            in notes)
    assert f"get gateway {II}" in notes
    calls = [line.strip() for line in notes.splitlines() if "grpcurl " in line]
    analyze = [c for c in calls if c.endswith("faceanalysis.v1.FaceAnalysis/AnalyzeImage")]
    assert analyze and all('-H "authorization: Bearer $KEY"' in c and " -d @ " in c for c in analyze)
    # The photo comes on stdin (no argument-length limit), without jq.
    assert all(c.startswith("{ printf '{\"image\": \"'; base64 -w0 photo.jpg; printf '\"}'; } | grpcurl ") for c in analyze)
    for call in calls:  # never a photo on the command line
        assert "$(base64" not in call
    assert "-insecure -authority faceanalysis.local $ADDR list" in notes


# --- values: documented, schema, the kind setup ----------------------------------------------------

def _leaves(node, path=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    else:
        yield path


@pytest.mark.parametrize("values_file, prefixes", [
    (CHART / "values.yaml", ("global.tls", "image-input.auth", "image-input.gateway", "image-input.ingress")),
    (CHART / "charts" / "image-input" / "values.yaml", ("auth", "gateway", "ingress", "networkPolicy")),
])
def test_edge_values_are_documented(values_file, prefixes):
    text = values_file.read_text()
    params = set(re.findall(r"^\s*## @param (\S+)", text, re.M))
    values = yaml.safe_load(text)
    for leaf in _leaves(values):
        if leaf.startswith(prefixes):
            parts = leaf.split(".")
            assert any(".".join(parts[:n]) in params for n in range(1, len(parts) + 1)), f"{values_file.name}: {leaf}"


def test_schema_rejects_bad_edge_values():
    with helm.Chart.load(CHART) as chart:
        for bad in (
            {"image-input": {"gateway": {"create": {"port": "https"}}}},
            {"image-input": {"gateway": {"hostname": "typo.example.com"}}},  # it is `hostnames`
            {"image-input": {"gateway": {"hostnames": ["Not A Host"]}}},
            {"image-input": {"auth": {"tenant": "Acme"}}},
            {"image-input": {"auth": {"enabled": "yes"}}},
            {"global": {"tls": {"issuerRef": {"kind": "Vault"}}}},
            {"global": {"tls": {"enable": True}}},
        ):
            with pytest.raises(helm.HelmError):
                chart.validate_schema(bad)


def test_kind_setup_reaches_the_gateway():
    """make kind-up: the EnvoyProxy puts the HTTPS listener on a node port that kind publishes as
    localhost:443, under the GatewayClass the chart's Gateway names."""
    cluster = yaml.safe_load((ROOT / "k8s" / "kind-cluster.yaml").read_text())
    published = {m["hostPort"]: m["containerPort"] for node in cluster["nodes"] for m in node.get("extraPortMappings", [])}
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "k8s" / "envoy-gateway-kind.yaml").read_text())}
    proxy, gateway_class = docs["EnvoyProxy"], docs["GatewayClass"]
    service = proxy["spec"]["provider"]["kubernetes"]["envoyService"]
    assert service["type"] == "NodePort"
    (port,) = service["patch"]["value"]["spec"]["ports"]
    assert published[443] == port["nodePort"]
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())["image-input"]["gateway"]
    assert port["port"] == render({}).get("Gateway", II)["spec"]["listeners"][0]["port"]
    assert gateway_class["metadata"]["name"] == chart_values["create"]["gatewayClassName"]
    assert gateway_class["spec"]["parametersRef"] == {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                      "name": proxy["metadata"]["name"],
                                                      "namespace": proxy["metadata"]["namespace"]}
    plain = yaml.safe_load((ROOT / "k8s" / "envoy-gateway.yaml").read_text())
    assert plain["metadata"]["name"] == gateway_class["metadata"]["name"]
    assert plain["spec"]["controllerName"] == gateway_class["spec"]["controllerName"]
    # The chart admits the proxies of that controller's namespace.
    np_values = yaml.safe_load((CHART / "charts" / "image-input" / "values.yaml").read_text())["networkPolicy"]
    assert np_values["gatewayFrom"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == \
        proxy["metadata"]["namespace"]


def test_kind_and_minikube_values_use_the_gateway(rendered_variants):
    for variant in ("kind", "minikube"):
        r = rendered_variants[variant]
        assert r.of_kind("GRPCRoute") and r.of_kind("Gateway") and not r.of_kind("Ingress"), variant
    prod = rendered_variants["production"]
    assert prod.get("Gateway", II)["spec"]["listeners"][0]["hostname"] == "faces.example.com"
    assert not [s for s in prod.of_kind("Secret")]  # nothing random in k8s/rendered
