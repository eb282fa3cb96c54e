"""Render the chart offline and index its manifests for the deploy tests."""

from __future__ import annotations

import importlib.util
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
