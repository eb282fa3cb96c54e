"""What the Kubernetes schemas cannot catch: the manifests agree with each other and with the
Python services (faceanalysis.runtime), and every pod follows the restricted profile."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from .chart import RELEASE, ROOT, SERVICES, kube_versions, kubernetes_validate, pod_specs

try:
    from faceanalysis.runtime import services as fa_services
    from faceanalysis.runtime.config import Settings
except ImportError:  # not installed in editable mode: use the source tree
    sys.path.insert(0, str(ROOT / "services"))
    from faceanalysis.runtime import services as fa_services
    from faceanalysis.runtime.config import Settings

# The oldest version Chart.yaml's kubeVersion admits (gRPC probes are GA from 1.27) and the
# newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = kube_versions()
# Custom resources: the operator's (ServiceMonitor, PrometheusRule), the Gateway API's and
# cert-manager's (validated against their CRD schemas in test_edge.py), Envoy Gateway's.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Gateway", "GRPCRoute", "HTTPRoute", "BackendTLSPolicy",
             "BackendTrafficPolicy", "Certificate", "Issuer"}
HTTP_PORT = Settings.model_fields["http_port"].default  # image-input's HTTP/JSON API and web page


def app(labels: dict) -> str:
    """The component a pod is, or a selector picks: its own name, whatever the name overrides."""
    return labels.get("app.kubernetes.io/component") or labels.get("app.kubernetes.io/name", "")


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- schemas ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(version, rendered_variants, tmp_path):
    manifests = {name: r.text() for name, r in rendered_variants.items()}
    problems = kubernetes_validate(manifests, version, tmp_path, CRD_KINDS)
    assert not problems, "\n".join(problems)


def test_rendered_manifests_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "k8s" / "render.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- labels and selectors -----------------------------------------------------------------------

def test_selectors_match_pod_labels(rendered):
    pods = pod_specs(rendered)
    for d in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        assert matches(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]), d["metadata"]["name"]
    for svc in rendered.of_kind("Service"):
        selected = [n for n, meta, _ in pods if matches(svc["spec"]["selector"], meta["labels"])]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {selected}"
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        assert any(matches(pdb["spec"]["selector"]["matchLabels"], meta["labels"]) for _, meta, _ in pods)
    for np in rendered.of_kind("NetworkPolicy"):
        assert any(matches(np["spec"]["podSelector"]["matchLabels"], meta["labels"]) for _, meta, _ in pods), np["metadata"]["name"]


def test_hpa_targets_its_deployment(rendered):
    deployments = {d["metadata"]["name"]: d for d in rendered.of_kind("Deployment")}
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["apiVersion"] == "apps/v1" and ref["kind"] == "Deployment"
        assert ref["name"] == hpa["metadata"]["name"] and ref["name"] in deployments
        assert app(hpa["metadata"]["labels"]) == app(deployments[ref["name"]]["spec"]["template"]["metadata"]["labels"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# --- ports: Services, containers, probes and faceanalysis.runtime.services agree -----------------

def test_ports_agree_with_python_registry(rendered):
    for service in SERVICES:
        spec = fa_services.get(service)
        deployment = rendered.get("Deployment", f"{RELEASE}-{service}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        # With global.tls the probes ask the plaintext health-only port (the kubelet cannot do TLS).
        health = int(env["FACEANALYSIS_HEALTH_PORT"]) if "FACEANALYSIS_HEALTH_PORT" in env else None
        # image-input serves the HTTP/JSON API beside gRPC (unless http.enabled is off: port 0).
        http = int(env.get("FACEANALYSIS_HTTP_PORT", 0))
        assert (service == "image-input") == ("FACEANALYSIS_HTTP_PORT" in env)
        assert http in (0, HTTP_PORT)
        expected = ({"grpc": spec.grpc_port, "metrics": spec.metrics_port} | ({"health": health} if health else {})
                    | ({"http": http} if http else {}))
        assert ports == expected
        assert health not in (spec.grpc_port, spec.metrics_port)
        assert container["command"] == ["faceanalysis", "serve", service]
        for probe, service_name in (("startupProbe", spec.grpc_service), ("readinessProbe", spec.grpc_service),
                                    ("livenessProbe", "")):
            assert container[probe]["grpc"] == {"port": health or spec.grpc_port, "service": service_name}, (service, probe)
        assert env["FACEANALYSIS_GRPC_PORT"] == str(spec.grpc_port)
        assert env["FACEANALYSIS_METRICS_PORT"] == str(spec.metrics_port)
        public = {"grpc", "http"} if http else {"grpc"}
        for svc_name, expected in ((f"{RELEASE}-{service}", public),
                                   (f"{RELEASE}-{service}-headless", {"grpc", "metrics"})):
            svc = rendered.get("Service", svc_name)
            assert {p["name"] for p in svc["spec"]["ports"]} == expected
            for p in svc["spec"]["ports"]:
                assert p["port"] == ports[p["targetPort"]], (svc_name, p)
        assert rendered.get("Service", f"{RELEASE}-{service}-headless")["spec"]["clusterIP"] == "None"


def test_service_target_ports_exist(rendered):
    pods = pod_specs(rendered)
    for svc in rendered.of_kind("Service"):
        (_, _, spec), = [p for p in pods if matches(svc["spec"]["selector"], p[1]["labels"])]
        names = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names, svc["metadata"]["name"]


def test_peers_are_dialled_through_headless_services(default_render):
    env = {e["name"]: e.get("value") for e in
           default_render.get("Deployment", f"{RELEASE}-image-input")["spec"]["template"]["spec"]["containers"][0]["env"]}
    for setting, service in (("LANDMARK", "face-landmark"), ("ATTRIBUTES", "face-attributes"), ("STORAGE", "data-storage")):
        port = fa_services.get(service).grpc_port
        assert env[f"FACEANALYSIS_{setting}_TARGET"] == f"dns:///{RELEASE}-{service}-headless.faceanalysis.svc.cluster.local:{port}"
    storage = {e["name"]: e for e in
               default_render.get("Deployment", f"{RELEASE}-data-storage")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert storage["FACEANALYSIS_REDIS_URL"]["value"] == f"redis://{RELEASE}-redis.faceanalysis.svc.cluster.local:6379/0"
    assert storage["FACEANALYSIS_ARCHIVE_DIR"]["value"] == "/var/lib/faceanalysis/archive"


def test_env_names_are_settings(rendered):
    from faceanalysis.cli import connect  # the CLI's own variables (key, CA) in the `helm test` Pod

    fields = set(Settings.model_fields)
    client = {connect.ENV_TLS, connect.ENV_CA, connect.ENV_KEY}
    for name, _, spec in pod_specs(rendered):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if name == f"{RELEASE}-api-test" and e["name"] in client:
                    continue
                if e["name"].startswith("FACEANALYSIS_"):
                    field = e["name"].removeprefix("FACEANALYSIS_").lower()
                    assert field in fields, f"{name}/{c['name']}: {e['name']} is not a Settings field"


# --- NetworkPolicies allow exactly the service edges --------------------------------------------

EDGES = {
    ("image-input", "face-landmark", 50051),
    ("image-input", "face-attributes", 50052),
    ("image-input", "data-storage", 50053),
    ("data-storage", "redis", 6379),
    ("api-test", "image-input", 50050),  # the `helm test` Pod
}


def _rules(np, direction):
    key = "from" if direction == "ingress" else "to"
    for rule in np["spec"].get(direction) or []:
        ports = {p["port"] for p in rule.get("ports", [])}
        assert ports, f"{np['metadata']['name']}: {direction} rule without ports opens every port"
        for peer in rule.get(key, []):
            assert peer, f"{np['metadata']['name']}: empty peer matches everything"
            yield peer, ports


def test_network_policies_allow_exactly_the_edges(rendered):
    if not rendered.of_kind("NetworkPolicy"):
        pytest.skip("network policies disabled")
    metrics_ports = {s.metrics_port for s in fa_services.SERVICES.values()} | {9121}
    ingress_edges, egress_edges = set(), set()
    for np in rendered.of_kind("NetworkPolicy"):
        me = app(np["spec"]["podSelector"]["matchLabels"])
        assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}  # deny by default both ways
        for peer, ports in _rules(np, "ingress"):
            if set(peer) == {"podSelector"}:  # a pod of this release
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
                ingress_edges |= {(app(peer["podSelector"]["matchLabels"]), me, p) for p in ports}
            elif ports <= metrics_ports:
                assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
            else:  # only the edge (the Gateway's proxies, the ingress controller) reaches the public API from outside
                assert me == "image-input" and ports <= {50050, HTTP_PORT} and 50050 in ports, (me, peer)
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in ("envoy", "ingress-nginx")
        for peer, ports in _rules(np, "egress"):
            if set(peer) == {"podSelector"}:
                egress_edges |= {(me, app(peer["podSelector"]["matchLabels"]), p) for p in ports}
            elif ports == {53}:
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
            else:  # model downloads of the init container, nothing else leaves the cluster
                assert me in ("face-landmark", "face-attributes") and ports == {80, 443} and "ipBlock" in peer
    assert ingress_edges == EDGES
    assert egress_edges == EDGES
    pods = {app(meta["labels"]) for _, meta, _ in pod_specs(rendered)}
    assert pods <= {app(np["spec"]["podSelector"]["matchLabels"]) for np in rendered.of_kind("NetworkPolicy")}


def test_model_egress_only_when_pulling(rendered_variants):
    for np in rendered_variants["baked-models"].of_kind("NetworkPolicy"):
        assert not any("ipBlock" in peer for rule in np["spec"]["egress"] for peer in rule["to"])


# --- restricted pod security --------------------------------------------------------------------

def test_restricted_pod_profile(rendered):
    # OpenShift (restricted-v2) assigns the UID, GID and fsGroup itself: the pods must ask for none.
    openshift = (rendered.values.get("global", {}).get("compatibility", {}).get("openshift", {})
                 .get("adaptSecurityContext") == "force")
    for name, _, spec in pod_specs(rendered):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        if openshift:
            assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod), name
        else:
            assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), name
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], name
        mounts_tmp = True
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc.get("privileged", False) is False, (name, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"], (name, c["name"])
            if not c["name"] == "metrics" and not c["name"] == "health":
                mounts_tmp &= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
        assert mounts_tmp, f"{name}: /tmp must be a writable emptyDir (read-only root filesystem)"


def test_termination_grace_exceeds_shutdown_grace(rendered):
    for d in rendered.of_kind("Deployment"):
        spec = d["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        shutdown = float(env.get("FACEANALYSIS_SHUTDOWN_GRACE_SECONDS") or Settings.model_fields["shutdown_grace_seconds"].default)
        assert spec["terminationGracePeriodSeconds"] > shutdown, d["metadata"]["name"]


def test_images(rendered):
    for name, _, spec in pod_specs(rendered):
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert re.search(r":[\w.-]+(@sha256:[a-f0-9]{64})?$", c["image"]), f"{name}: unpinned image {c['image']}"
            assert not c["image"].endswith(":latest")
            if c["name"] in SERVICES + ["models", "health", "analyze"]:
                assert re.search(r"(^|/)faceanalysis-(image-input|face-landmark|face-attributes|data-storage):", c["image"])


# --- no secrets in values or rendered env -------------------------------------------------------

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PASSWD|AUTH|API_KEY$)", re.I)


def test_no_secret_values_in_env(rendered):
    for name, _, spec in pod_specs(rendered):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if SECRET_NAME.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, c["name"], e["name"])
    secret_values = [v for s in rendered.of_kind("Secret") for v in (s.get("data") or {}).values()]
    others = yaml.safe_dump_all([d for d in rendered.docs if d["kind"] != "Secret"])
    assert not [v for v in secret_values if v in others]


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, node


@pytest.mark.parametrize("values_file", ["charts/faceanalysis/values.yaml", "k8s/values-kind.yaml",
                                         "k8s/values-minikube.yaml", "k8s/values-production.yaml",
                                         *[f"charts/faceanalysis/charts/{s}/values.yaml" for s in SERVICES + ["redis"]]])
def test_no_secrets_in_values(values_file):
    values = yaml.safe_load((ROOT / values_file).read_text())
    for path, value in _walk(values):
        leaf = path.rsplit(".", 1)[-1]
        if re.search(r"(password|secret|token)$", leaf, re.I) and not leaf.lower().startswith("existing"):
            assert value in ("", None), f"{values_file}: {path} holds a secret value"
