"""Render the chart offline and index its manifests for the deploy tests."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "faceanalysis"
SUBCHARTS = ["image-input", "face-landmark", "face-attributes", "data-storage", "redis"]
SERVICES = ["image-input", "face-landmark", "face-attributes", "data-storage"]
RELEASE, NAMESPACE = "fa", "faceanalysis"

_spec = importlib.util.spec_from_file_location("faceanalysis_k8s_render", ROOT / "k8s" / "render.py")
render_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_module)
merge = render_module.merge

# Value sets every check runs on: the defaults and each switch a user is likely to flip.
VARIANTS: dict[str, dict] = {
    "default": {},
    "autoscaling-off": {s: {"autoscaling": {"enabled": False}} for s in SERVICES},
    # data-storage autoscales only on a ReadWriteMany archive (rendering refuses otherwise).
    "custom-metric": merge({s: {"autoscaling": {"enabled": True, "inFlight": {"enabled": True}}} for s in SERVICES},
                           {"data-storage": {"archive": {"persistence": {"accessModes": ["ReadWriteMany"]}}}}),
    # The edge: the Ingress instead of the Gateway (TLS at the Ingress); a shared Gateway of the
    # platform team; the Gateway's certificate from cert-manager; both edges with TLS everywhere.
    "ingress": {"image-input": {"gateway": {"enabled": False},
                                "ingress": {"enabled": True, "tls": {"enabled": True, "secretName": "faceanalysis-tls"}}}},
    "existing-gateway": {"image-input": {"gateway": {
        "parentRef": {"name": "shared", "namespace": "gateways", "sectionName": "grpc"},
        "create": {"enabled": False}, "envoyGateway": {"enabled": False}}}},
    "gateway-cert-manager": {"image-input": {"gateway": {"hostnames": ["faces.example.com"], "create": {
        "hostname": "faces.example.com",
        "tls": {"certManager": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}}}}}},
    "internal-tls": {"global": {"tls": {"enabled": True}}, "image-input": {"ingress": {"enabled": True}}},
    # API keys from your Secret, or off.
    "existing-api-keys": {"image-input": {"auth": {"existingSecret": "my-api-keys"}}},
    "auth-off": {"image-input": {"auth": {"enabled": False}}},
    "observability-on": {
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}}
    },
    "observability-off": {
        "metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}, "dashboards": {"enabled": False}}
    },
    "existing-redis-secret": {"global": {"redis": {"existingSecret": "my-redis", "existingSecretPasswordKey": "password"}}},
    "baked-models": {"global": {"models": {"source": "baked"}}},
    # The archive on an emptyDir (persistence off): it dies with the pod.
    "archive-emptydir": {"data-storage": {"archive": {"persistence": {"enabled": False}}}},
    "kind": render_module.values_from_files([ROOT / "k8s" / "values-kind.yaml"]),
    "minikube": render_module.values_from_files([ROOT / "k8s" / "values-minikube.yaml"]),
    "production": render_module.values_from_files([ROOT / "k8s" / "values-production.yaml"]),
    # OpenShift's restricted-v2: no fixed UID, GID or fsGroup anywhere.
    "openshift": render_module.values_from_files([ROOT / "k8s" / "values-openshift.yaml"]),
    # What a platform team sets on every object and pod (test_platform.py checks each lands).
    "platform": merge({
        "global": {"commonLabels": {"team": "vision", "cost-center": "{{ .Release.Namespace }}"},
                   "commonAnnotations": {"example.com/owner": "vision@example.com"},
                   "priorityClassName": "faceanalysis-critical"},
        "redis": {"priorityClassName": "faceanalysis-storage", "commonLabels": {"tier": "storage"}},
    }, {s: {"podLabels": {"azure.workload.identity/use": "true"},
            "serviceAccount": {"annotations": {
                "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"}},
            "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "corporate-ca"}}],
            "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
            "extraEnv": [{"name": "SSL_CERT_DIR", "value": "/etc/ssl/corporate"}],
            "extraEnvFrom": [{"configMapRef": {"name": "proxy-settings", "optional": True}}]}
        for s in SERVICES + ["redis"]}),
    # The HTTP/JSON API off: gRPC only, as before it existed.
    "http-off": {"image-input": {"http": {"enabled": False}}},
}


@dataclass
class Rendered:
    values: dict
    docs: list[dict] = field(default_factory=list)
    notes: str = ""

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        matches = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
        return matches[0]

    def text(self) -> str:
        return "---\n" + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in self.docs)


def render(values: dict) -> Rendered:
    out = render_module.render(values, release=RELEASE, namespace=NAMESPACE)
    result = Rendered(values=values)
    for source, text in sorted(out.items()):
        if source.endswith("NOTES.txt"):
            result.notes = text
            continue
        result.docs += [d for d in yaml.safe_load_all(text) if d]
    return result


def pod_specs(rendered: Rendered) -> list[tuple[str, dict, dict]]:
    """(name, pod metadata, pod spec) of every workload and bare Pod."""
    out = []
    for d in rendered.docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["metadata"], d["spec"]))
    return out


def kube_versions() -> list[str]:
    """The Kubernetes versions the chart is checked at: the oldest its kubeVersion admits and the
    newest kubernetes-validate has schemas for."""
    from kubernetes_validate.utils import latest_version

    claim = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    (oldest,) = re.findall(r">=\s*v?(\d+\.\d+\.\d+)", claim)
    return [oldest, latest_version()]


def kubernetes_validate(manifests: dict[str, str], version: str, tmp_path: Path,
                        custom_kinds: set[str] = frozenset()) -> list[str]:
    """Problems `kubernetes-validate --strict` finds in named YAML streams at one Kubernetes
    version; custom resources (custom_kinds), which it has no schemas for, are left to the CRD
    checks of test_edge.py."""
    files = []
    for name, text in manifests.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        files.append(str(path))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", "-k", version, *files],
        capture_output=True, text=True,
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.strip() and not any(f"kind {k} " in line for k in custom_kinds)]
    if proc.returncode and not problems:
        problems = [f"kubernetes-validate exited {proc.returncode}"]
    return problems
