"""What a platform team expects of a chart it adopts: names it can override, its labels and
annotations on every object, pod extras (volumes, environment, priority), ServiceAccounts for
workload identity, security contexts that OpenShift admits, configurable probes, values schemas
and generated READMEs, chart metadata, one source for each default, and a Redis password that is
on no command line and survives upgrades."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml

from .chart import (CHART, NAMESPACE, RELEASE, ROOT, SERVICES, kube_versions, kubernetes_validate, merge,
                    pod_specs, render)
from .test_edge import GATEWAY_API, _crd_schema, _errors
from .test_manifests import CRD_KINDS, app, matches

CHARTS = [CHART] + [CHART / "charts" / name for name in SERVICES + ["redis", "faceanalysis-common"]]
WORKLOADS = {f"{RELEASE}-{s}" for s in SERVICES} | {f"{RELEASE}-redis"}


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- names ------------------------------------------------------------------------------------------

RENAMED = {
    "fullnameOverride": "faces",            # the umbrella chart's own objects
    "nameOverride": "faces-umbrella",
    "image-input": {"fullnameOverride": "faces-api"},
    "face-landmark": {"nameOverride": "landmarks"},
    "data-storage": {"fullnameOverride": "faces-storage"},
    "redis": {"nameOverride": "cache"},
}
DOMAIN = f"{NAMESPACE}.svc.cluster.local"
POINTERS = {  # what the renamed services' callers are told to set
    "image-input": {"config": {"landmark_target": f"dns:///{RELEASE}-landmarks-headless.{DOMAIN}:50051",
                               "storage_target": f"dns:///faces-storage-headless.{DOMAIN}:50053"}},
    "global": {"redis": {"host": f"{RELEASE}-cache.{DOMAIN}"}},
}


@pytest.mark.parametrize("missing, message", [
    ("landmark_target", f"image-input.config.landmark_target=dns:///{RELEASE}-landmarks-headless.{DOMAIN}:50051"),
    ("storage_target", f"image-input.config.storage_target=dns:///faces-storage-headless.{DOMAIN}:50053"),
    ("redis", f"global.redis.host={RELEASE}-cache.{DOMAIN}"),
])
def test_a_renamed_peer_needs_its_pointer(missing, message):
    """A chart cannot see a sibling's values: rendering names the value that points at it."""
    values = merge(RENAMED, POINTERS)
    if missing == "redis":
        del values["global"]
    else:
        del values["image-input"]["config"][missing]
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


@pytest.fixture(scope="module")
def renamed():
    return render(merge(RENAMED, POINTERS))


def test_name_overrides_rename_every_object(renamed):
    names = {(d["kind"], d["metadata"]["name"]) for d in renamed.docs}
    assert {n for k, n in names if k == "Deployment"} == {"faces-api", f"{RELEASE}-landmarks",
                                                          f"{RELEASE}-face-attributes", "faces-storage"}
    assert {n for k, n in names if k == "StatefulSet"} == {f"{RELEASE}-cache"}
    for kind in ("Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"):
        assert ("faces-api" if kind != "Service" else "faces-api-headless") in {n for k, n in names if k == kind}
    assert ("Pod", "faces-api-test") in names and ("NetworkPolicy", "faces-api-test") in names
    assert ("GRPCRoute", "faces-api") in names and ("HTTPRoute", "faces-api-http") in names
    assert ("Secret", "faces-api-api-keys") in names
    # Objects other charts name keep the release's name.
    assert ("Secret", f"{RELEASE}-redis-auth") in names
    assert not [n for _, n in names if n.startswith(f"{RELEASE}-image-input") or n.startswith(f"{RELEASE}-redis-")
                and n != f"{RELEASE}-redis-auth"]
    # nameOverride is also the app.kubernetes.io/name of the objects; the component label stays.
    pods = {app(meta["labels"]): meta["labels"] for _, meta, _ in pod_specs(renamed)}
    assert pods["face-landmark"]["app.kubernetes.io/name"] == "landmarks"
    assert pods["redis"]["app.kubernetes.io/name"] == "cache"
    umbrella_labels = renamed.get("ConfigMap", "faces-api-test")["metadata"]["labels"]
    assert umbrella_labels["app.kubernetes.io/name"] == "faces-umbrella"


def test_renamed_services_still_find_each_other(renamed):
    pods = pod_specs(renamed)
    services = {s["metadata"]["name"]: s for s in renamed.of_kind("Service")}

    def component_behind(host: str) -> str:
        service = services[host.split(".")[0]]
        (meta,) = [meta for _, meta, _ in pods if matches(service["spec"]["selector"], meta["labels"])]
        return app(meta["labels"])

    env = _env(renamed.get("Deployment", "faces-api")["spec"]["template"]["spec"]["containers"][0])
    peers = (("LANDMARK", "face-landmark"), ("ATTRIBUTES", "face-attributes"), ("STORAGE", "data-storage"))
    for setting, peer in peers:
        host = env[f"FACEANALYSIS_{setting}_TARGET"].removeprefix("dns:///").rsplit(":", 1)[0]
        assert component_behind(host) == peer, setting
    storage = _env(renamed.get("Deployment", "faces-storage")["spec"]["template"]["spec"]["containers"][0])
    assert component_behind(storage["FACEANALYSIS_REDIS_URL"].removeprefix("redis://").split(":")[0]) == "redis"
    test_pod = renamed.get("Pod", "faces-api-test")["spec"]["containers"][0]
    target = test_pod["command"][test_pod["command"].index("--target") + 1]
    assert component_behind(target.split(":")[0]) == "image-input"
    key = _env(test_pod)["FACEANALYSIS_API_KEY"]["secretKeyRef"]["name"]
    keys = renamed.get("Deployment", "faces-api")["spec"]["template"]["spec"]["volumes"]
    assert key == "faces-api-api-keys" == next(v for v in keys if v["name"] == "api-keys")["secret"]["secretName"]
    # Every selector picks pods; every NetworkPolicy peer of this release is a pod that exists.
    for np in renamed.of_kind("NetworkPolicy"):
        for rule in np["spec"].get("ingress", []) + np["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if set(peer) == {"podSelector"}:
                    assert any(matches(peer["podSelector"]["matchLabels"], m["labels"]) for _, m, _ in pods), peer
    for d in renamed.of_kind("Deployment") + renamed.of_kind("StatefulSet"):
        assert matches(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
    for route in renamed.of_kind("GRPCRoute") + renamed.of_kind("HTTPRoute"):
        assert route["spec"]["rules"][0]["backendRefs"][0]["name"] in services


@pytest.mark.parametrize("version", kube_versions())
def test_renamed_release_validates(renamed, version, tmp_path):
    problems = kubernetes_validate({"renamed": renamed.text()}, version, tmp_path, CRD_KINDS)
    validators = {kind: jsonschema.Draft7Validator(_crd_schema(kind)) for kind in GATEWAY_API}
    problems += [str(e) for d in renamed.docs if d["kind"] in validators for e in _errors(validators[d["kind"]], d)]
    assert not problems, "\n".join(problems)
    report = helm.lint(CHART, merge(RENAMED, POINTERS), strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


# --- labels, annotations and pod extras ---------------------------------------------------------

def test_common_labels_and_annotations_on_every_object(rendered_variants):
    r, default = rendered_variants["platform"], rendered_variants["default"]
    assert len(r.docs) == len(default.docs)
    for d in r.docs:
        labels, annotations = d["metadata"]["labels"], d["metadata"].get("annotations") or {}
        where = (d["kind"], d["metadata"]["name"])
        # Values are templated: cost-center is the release namespace.
        assert labels["team"] == "vision" and labels["cost-center"] == NAMESPACE, where
        assert annotations["example.com/owner"] == "vision@example.com", where
        assert ("tier" in labels) == (d["metadata"]["name"].startswith(f"{RELEASE}-redis")), where
    for name, meta, _ in pod_specs(r):
        assert meta["labels"]["team"] == "vision", name
    # The chart's own annotations stay beside them (hooks, resource policies, checkov skips).
    pod = r.get("Pod", f"{RELEASE}-api-test")["metadata"]["annotations"]
    assert pod["helm.sh/hook"] == "test" and pod["checkov.io/skip1"].startswith("CKV_K8S_8=")
    assert r.get("Secret", f"{RELEASE}-redis-auth")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_common_labels_belong_under_global():
    """A top-level commonLabels would reach only the umbrella chart's own objects: refused, with the way."""
    with pytest.raises(helm.HelmError, match="global.commonLabels"):
        render({"commonLabels": {"team": "vision"}})


def test_common_labels_cannot_change_selectors():
    r = render({"global": {"commonLabels": {"app.kubernetes.io/name": "mine", "app.kubernetes.io/instance": "x"}}})
    for d in r.of_kind("Deployment"):
        assert d["metadata"]["labels"]["app.kubernetes.io/name"] == d["metadata"]["name"].removeprefix(f"{RELEASE}-")
        assert matches(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])


def test_pod_extras_land_in_every_workload(rendered_variants):
    r = rendered_variants["platform"]
    workloads = {n: (meta, spec) for n, meta, spec in pod_specs(r) if n in WORKLOADS}
    assert set(workloads) == WORKLOADS
    for name, (meta, spec) in workloads.items():
        assert spec["priorityClassName"] == ("faceanalysis-storage" if name == f"{RELEASE}-redis"
                                             else "faceanalysis-critical"), name
        assert meta["labels"]["azure.workload.identity/use"] == "true", name
        assert {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}} in spec["volumes"], name
        main = spec["containers"][0]
        # The model init container pulls through the same CA bundle and proxy settings.
        for c in [main] + [c for c in spec.get("initContainers", []) if c["name"] == "models"]:
            assert {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True} in c["volumeMounts"]
            assert _env(c)["SSL_CERT_DIR"] == "/etc/ssl/corporate"
            assert c["envFrom"] == [{"configMapRef": {"name": "proxy-settings", "optional": True}}]
    assert r.get("Pod", f"{RELEASE}-api-test")["spec"]["priorityClassName"] == "faceanalysis-critical"
    for name, _, spec in pod_specs(rendered_variants["default"]):
        assert "priorityClassName" not in spec and "envFrom" not in spec["containers"][0], name


def test_service_accounts_for_workload_identity(rendered_variants):
    r = rendered_variants["platform"]
    accounts = r.of_kind("ServiceAccount")
    assert {a["metadata"]["name"] for a in accounts} == WORKLOADS
    for account in accounts:
        assert account["metadata"]["annotations"]["azure.workload.identity/client-id"].startswith("0000")
        assert account["automountServiceAccountToken"] is False
    for name, _, spec in pod_specs(r):
        assert spec["automountServiceAccountToken"] is False, name
    # For the rare pod that needs the Kubernetes API; and an existing account instead of a new one.
    mounted = render({"data-storage": {"serviceAccount": {"automountServiceAccountToken": True}},
                      "face-landmark": {"serviceAccount": {"create": False, "name": "vision-models"}}})
    def pod(name):
        return mounted.get("Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]
    assert mounted.get("ServiceAccount", f"{RELEASE}-data-storage")["automountServiceAccountToken"] is True
    assert pod("data-storage")["automountServiceAccountToken"] is True
    assert not [a for a in mounted.of_kind("ServiceAccount") if a["metadata"]["name"] == f"{RELEASE}-face-landmark"]
    assert pod("face-landmark")["serviceAccountName"] == "vision-models"


# --- security contexts: the restricted profile, OpenShift's restricted-v2 -----------------------

FIXED_IDS = {"runAsUser", "runAsGroup", "fsGroup"}


def test_openshift_pods_set_no_uid_gid_or_fs_group(rendered_variants):
    r = rendered_variants["openshift"]
    pods = pod_specs(r)
    assert {n for n, _, _ in pods} == WORKLOADS | {f"{RELEASE}-api-test"}
    for name, _, spec in pods:
        assert not FIXED_IDS & set(spec["securityContext"]), name
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in _containers(spec):
            sc = c["securityContext"]
            assert not FIXED_IDS & set(sc), (name, c["name"])
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Nothing else moved: the same objects as the default render, the restricted profile kept.
    assert [(d["kind"], d["metadata"]["name"]) for d in r.docs] == \
        [(d["kind"], d["metadata"]["name"]) for d in rendered_variants["default"].docs]


def test_a_null_security_key_is_left_out():
    r = render({"redis": {"podSecurityContext": {"fsGroup": None, "fsGroupChangePolicy": None}},
                "image-input": {"containerSecurityContext": {"runAsUser": None}}})
    redis = r.get("StatefulSet", f"{RELEASE}-redis")["spec"]["template"]["spec"]["securityContext"]
    assert "fsGroup" not in redis and "fsGroupChangePolicy" not in redis and redis["runAsUser"] == 10001
    image_input = r.get("Deployment", f"{RELEASE}-image-input")["spec"]["template"]["spec"]
    assert "runAsUser" not in image_input["containers"][0]["securityContext"]
    assert image_input["securityContext"]["runAsUser"] == 10001  # the pod's own stays
    storage = r.get("Deployment", f"{RELEASE}-data-storage")["spec"]["template"]["spec"]
    assert storage["securityContext"]["fsGroup"] == 10001


# --- probes -----------------------------------------------------------------------------------------

def test_probes_are_configurable():
    r = render({"face-attributes": {"probes": {"startup": {"enabled": False},
                                               "liveness": {"initialDelaySeconds": 5, "periodSeconds": 20}}},
                "redis": {"probes": {"readiness": {"timeoutSeconds": 9}}}})
    c = r.get("Deployment", f"{RELEASE}-face-attributes")["spec"]["template"]["spec"]["containers"][0]
    assert "startupProbe" not in c
    assert c["livenessProbe"] == {"grpc": {"port": 50052, "service": ""}, "initialDelaySeconds": 5,
                                  "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6}
    assert c["readinessProbe"]["successThreshold"] == 1
    redis = r.get("StatefulSet", f"{RELEASE}-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["readinessProbe"]["timeoutSeconds"] == 9
    # The current timings stay the defaults (face-attributes loads models for up to 5 minutes).
    default = render({}).get("Deployment", f"{RELEASE}-face-attributes")["spec"]["template"]["spec"]["containers"][0]
    assert default["startupProbe"]["failureThreshold"] * default["startupProbe"]["periodSeconds"] == 300


def test_the_renamed_probe_key_is_refused():
    """probes.startupFailureThreshold became probes.startup.failureThreshold (artifacthub.io/changes)."""
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError, match="startupFailureThreshold"):
            chart.validate_schema({"face-attributes": {"probes": {"startupFailureThreshold": 60}}})


# --- images follow the release -------------------------------------------------------------------

def test_images_default_to_the_charts_app_version(rendered_variants):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for chart in CHARTS[1:-1]:
        assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] in (app_version, "7.4.2"), chart
    ours = re.compile(rf"^ghcr\.io/faceanalysis/faceanalysis-({'|'.join(SERVICES)}):(.+)$")
    images = {c["image"] for _, _, spec in pod_specs(rendered_variants["default"]) for c in _containers(spec)}
    tags = {ours.match(i).group(2) for i in images if ours.match(i)}
    assert tags == {app_version}
    pinned = render({"global": {"image": {"tag": "1.2.3", "registry": "registry.example/vision"}}})
    images = {c["image"] for _, _, spec in pod_specs(pinned) for c in _containers(spec)
              if "faceanalysis-" in c["image"]}
    assert images == {f"registry.example/vision/faceanalysis-{s}:1.2.3" for s in SERVICES}


# --- values, schemas, READMEs and chart metadata -------------------------------------------------

@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_values_validate_against_the_charts_schema(chart):
    text = (chart / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    values = yaml.safe_load(text)
    if chart != CHART:  # as Helm hands them on in the umbrella chart
        values["global"] = yaml.safe_load((CHART / "values.yaml").read_text())["global"]
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(values))
    assert not errors, "\n".join(e.message for e in errors)
    for bad in ({"podSecurityContext": {"runAsUser": "root"}}, {"serviceAccount": {"annotation": {}}},
                {"nameOverride": "Not_A_Name"}, {"probes": {"liveness": {"periodSeconds": 0}}}):
        wrong = {**values, **bad} if chart != CHART else merge(values, {"face-landmark": bad})
        assert list(jsonschema.Draft7Validator(schema).iter_errors(wrong)), (chart.name, bad)


@pytest.mark.skipif(shutil.which("node") is None, reason="node missing (readme-generator-for-helm)")
def test_generated_readmes_and_schemas_are_current():
    """Each chart's README tables come from the @param lines of its values.yaml (readme-generator-for-helm,
    which also fails on a value without one); the subcharts' schemas from the umbrella's."""
    proc = subprocess.run([sys.executable, str(ROOT / "k8s" / "chart_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_chart_metadata():
    umbrella = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for chart in CHARTS:
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert meta["home"].startswith("https://") and meta["sources"] and meta["maintainers"], chart.name
        assert meta["annotations"]["artifacthub.io/license"] == "MIT", chart.name
        if meta.get("type") != "library":
            assert meta["kubeVersion"] == umbrella["kubeVersion"] and meta["appVersion"], chart.name
    changes = yaml.safe_load(umbrella["annotations"]["artifacthub.io/changes"])
    assert changes and all(c["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}
                           and c["description"].strip() for c in changes)
    # Renamed value paths are announced.
    assert any("probes.startupFailureThreshold" in c["description"] for c in changes)


def _leaves(node, path=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, path + (key,))
    else:
        yield path, node


def test_each_default_has_one_source():
    """What every service shares is in the library chart's values.yaml; a service's own values.yaml
    holds only what differs, so a shared default is changed in one place."""
    library = yaml.safe_load((CHART / "charts" / "faceanalysis-common" / "values.yaml").read_text())
    shared = dict(_leaves(library))
    # redis states its own image (the official one) and probe set (redis-cli) in full.
    its_own = {"redis": ("image", "probes")}
    for service in SERVICES + ["redis"]:
        values = yaml.safe_load((CHART / "charts" / service / "values.yaml").read_text())
        same = [".".join(p) for p, v in _leaves(values)
                if shared.get(p, object()) == v and p[0] not in its_own.get(service, ())]
        assert not same, f"{service}/values.yaml repeats the shared defaults {same}"


# --- Redis: the password ----------------------------------------------------------------------------

def _secret_values(r) -> set[str]:
    return {base64.b64decode(v).decode() for s in r.of_kind("Secret") for v in (s.get("data") or {}).values()}


@pytest.mark.parametrize("extra", [{}, {"global": {"redis": {"password": "Xy9-not-on-a-command-line"}}}],
                         ids=["generated", "from-values"])
def test_redis_password_is_on_no_command_line(rendered_variants, extra):
    renders = dict(rendered_variants) if not extra else {"password": render(extra)}
    if extra:
        secret = renders["password"].get("Secret", f"{RELEASE}-redis-auth")["data"]["redis-password"]
        assert base64.b64decode(secret).decode() == "Xy9-not-on-a-command-line"
    for variant, r in renders.items():
        secrets = {s for s in _secret_values(r) if len(s) >= 8}
        for name, _, spec in pod_specs(r):
            for c in _containers(spec):
                argv = " ".join(c.get("command", []) + c.get("args", []))
                probes = " ".join(" ".join(c.get(p, {}).get("exec", {}).get("command", []))
                                  for p in ("startupProbe", "readinessProbe", "livenessProbe"))
                assert not [s for s in secrets if s in argv or s in probes], (variant, name, c["name"])
                assert "requirepass" not in argv.replace('requirepass "$password"', ""), (variant, name)
                assert "-a " not in probes and "--pass" not in probes and "--requirepass" not in argv


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
                    reason="redis-server missing (Debian package redis-server)")
def test_redis_starts_with_the_password_from_its_environment(default_render, tmp_path):
    """The rendered start-up script and probes, run as they are with a real redis-server: Redis
    asks for the password, knows it, and no process shows it on its command line."""
    sts = default_render.get("StatefulSet", f"{RELEASE}-redis")["spec"]["template"]["spec"]
    redis = sts["containers"][0]
    assert redis["command"] == ["sh", "-c"] and [e["name"] for e in redis["env"]] == ["REDISCLI_AUTH"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = default_render.get("ConfigMap", f"{RELEASE}-redis")["data"]["redis.conf"]
    config = config.replace("port 6379", f"port {port}\nbind 127.0.0.1").replace("dir /data", f"dir {tmp_path}")
    (tmp_path / "redis.conf").write_text(config)
    script = redis["args"][0].replace("/etc/redis/redis.conf", str(tmp_path / "redis.conf"))
    password = 'a "quoted" pass\\word with spaces'  # what an existingSecret may hold
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def cli(*args, auth=password):
            env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": auth} if auth is not None else {})}
            return subprocess.run(["redis-cli", "-p", str(port), *args], env=env, capture_output=True, text=True)

        deadline = time.monotonic() + 15
        while cli("ping").stdout.strip() != "PONG":
            exited = server.poll() is not None
            assert not exited and time.monotonic() < deadline, server.stdout.read() if exited else "no PONG"
            time.sleep(0.1)
        assert "NOAUTH" in cli("ping", auth=None).stdout
        wrong = cli("ping", auth="guess")
        assert "WRONGPASS" in wrong.stdout + wrong.stderr
        # exec replaced the shell: redis-server is the process the kubelet signals.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        assert cmdline[0].startswith("redis-server"), cmdline  # its process title
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                assert password not in proc.joinpath("cmdline").read_bytes().decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        # The probes, as the kubelet runs them in the container.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = [part.replace("-p 6379", f"-p {port}") for part in redis[probe]["exec"]["command"]]
            assert subprocess.run(command, env=env).returncode == 0, probe
            assert subprocess.run(command, env={**env, "REDISCLI_AUTH": "guess"}).returncode != 0, probe
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    assert server.returncode == 0  # SIGTERM: a clean shutdown


# --- Redis and the API key: generated once, kept on upgrades (lookup) ------------------------------

class _KubeAPI(BaseHTTPRequestHandler):
    """The two answers Helm's `lookup` needs from a Kubernetes API server: the v1 resource list and
    GET of a Secret. Helm's own client (client-go, in the SDK's library) talks to it over a real
    socket; there is no API server on these machines (docs: DESIGN.md, checks without a cluster)."""

    secrets: dict[str, dict] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets/"
        if path == "/api/v1":
            body = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get"]}]}
        elif path.startswith(prefix) and path[len(prefix):] in self.secrets:
            name = path[len(prefix):]
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
                    "data": self.secrets[name]}
        else:
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
        data = json.dumps(body).encode()
        self.send_response(body.get("code", 200))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def kube_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _render_against(url: str, values: dict) -> dict[str, list[dict]]:
    with helm.Config(namespace=NAMESPACE, kube_apiserver=url) as config, helm.Chart.load(CHART) as chart:
        out = config.render(chart, values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    return {path: [d for d in yaml.safe_load_all(text) if d] for path, text in out.items() if path.endswith(".yaml")}


def test_generated_secrets_are_kept_on_upgrade(kube_api):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    _KubeAPI.secrets = {f"{RELEASE}-redis-auth": {"redis-password": b64("kept-redis-password")},
                        f"{RELEASE}-image-input-api-keys": {"api-key": b64("fa_kept0key")}}
    url = f"http://127.0.0.1:{kube_api.server_port}"
    rendered = _render_against(url, {})
    (redis,) = rendered["faceanalysis/charts/redis/templates/secret.yaml"]
    assert base64.b64decode(redis["data"]["redis-password"]).decode() == "kept-redis-password"
    (keys,) = rendered["faceanalysis/charts/image-input/templates/api-keys.yaml"]
    assert base64.b64decode(keys["data"]["api-key"]).decode() == "fa_kept0key"
    # A password in values wins over the stored one; nothing stored: a new one each render.
    rendered = _render_against(url, {"global": {"redis": {"password": "from-values"}}})
    (redis,) = rendered["faceanalysis/charts/redis/templates/secret.yaml"]
    assert base64.b64decode(redis["data"]["redis-password"]).decode() == "from-values"
    _KubeAPI.secrets = {}
    first, second = (_render_against(url, {})["faceanalysis/charts/redis/templates/secret.yaml"][0] for _ in range(2))
    assert first["data"] != second["data"]  # why offline renders must set existingSecret or password
