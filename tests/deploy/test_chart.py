"""The chart renders and lints through the Helm SDK (helm-python-sdk bundles Helm v4 as a
shared library, so no helm binary and no network are needed)."""

from __future__ import annotations

import helm_python as helm
import pytest
import yaml

from .chart import CHART, SUBCHARTS, VARIANTS, kube_versions, kubernetes_validate, merge, render

# The oldest version Chart.yaml's kubeVersion admits and the newest kubernetes-validate knows.
KUBE_VERSIONS = [f"v{v}" for v in kube_versions()]


def _lint_errors(report: dict) -> list[str]:
    # severity 2 = warning, 3 = error; strict lint treats warnings as errors too.
    return report["errors"] + [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_umbrella_lints(variant, kube_version):
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace="faceanalysis", kube_version=kube_version)
    assert not _lint_errors(report), _lint_errors(report)


@pytest.mark.parametrize("subchart", SUBCHARTS)
def test_subchart_lints_with_parent_globals(subchart):
    parent = yaml.safe_load((CHART / "values.yaml").read_text())
    values = {"global": parent["global"], **(parent.get(subchart) or {})}
    report = helm.lint(CHART / "charts" / subchart, values, strict=True, namespace="faceanalysis")
    assert not _lint_errors(report), _lint_errors(report)


def test_library_chart_renders_nothing_itself(default_render):
    # A library chart only defines templates: every rendered object belongs to a service chart or the umbrella.
    assert all(d["metadata"]["labels"].get("helm.sh/chart", "").split("-0")[0] != "faceanalysis-common"
               for d in default_render.docs if "labels" in d["metadata"])


def test_schema_rejects_nonsense():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})
        for bad in (
            {"global": {"models": {"source": "downloaded-while-serving"}}},
            {"image-input": {"autoscaling": {"maxReplicas": "many"}}},
            {"face-landmark": {"config": {"detector": "magic"}}},
            {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        ):
            with pytest.raises(helm.HelmError):
                chart.validate_schema(bad)


def test_default_objects(default_render):
    kinds = sorted({d["kind"] for d in default_render.docs})
    # The edge by default: a Gateway of class eg with its GRPCRoute, the HTTPRoute of the HTTP API
    # and Envoy Gateway's timeout policy (tests/deploy/test_edge.py); no Ingress (ingress-nginx is
    # retired upstream).
    assert kinds == ["BackendTrafficPolicy", "ConfigMap", "Deployment", "GRPCRoute", "Gateway",
                     "HTTPRoute", "HorizontalPodAutoscaler", "NetworkPolicy", "PersistentVolumeClaim", "Pod",
                     "PodDisruptionBudget", "Secret", "Service", "ServiceAccount", "StatefulSet"]
    assert len(default_render.of_kind("Deployment")) == 4
    assert len(default_render.of_kind("HorizontalPodAutoscaler")) == 3  # not data-storage: one archive, one pod
    assert len(default_render.of_kind("StatefulSet")) == 1


def test_autoscaling_off_pins_replicas(rendered_variants):
    r = rendered_variants["autoscaling-off"]
    assert not r.of_kind("HorizontalPodAutoscaler")
    assert all(d["spec"]["replicas"] == 1 for d in r.of_kind("Deployment"))
    # With an HPA the Deployment leaves replicas to it (else every upgrade resets the scale); by
    # default data-storage has none (one replica on a ReadWriteOnce archive, see below).
    scaled = [d for d in rendered_variants["default"].of_kind("Deployment")
              if d["metadata"]["name"] != "fa-data-storage"]
    assert len(scaled) == 3 and all("replicas" not in d["spec"] for d in scaled)


def test_custom_metric(rendered_variants):
    # The metric and its target are checked in test_admission.py; here: CPU stays beside it.
    for hpa in rendered_variants["custom-metric"].of_kind("HorizontalPodAutoscaler"):
        types = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert types["Resource"]["resource"]["name"] == "cpu"
        assert types["Pods"]["pods"]["metric"]["name"].startswith("faceanalysis_")
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    for hpa in rendered_variants["default"].of_kind("HorizontalPodAutoscaler"):
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_ingress_is_grpc_and_tls_optional(rendered_variants):
    assert not rendered_variants["default"].of_kind("Ingress")  # off by default
    plain = render({"image-input": {"ingress": {"enabled": True}}}).get("Ingress", "fa-image-input")
    assert plain["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert "tls" not in plain["spec"]
    backend = plain["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "fa-image-input", "port": {"name": "grpc"}}
    tls = rendered_variants["ingress"].get("Ingress", "fa-image-input")
    assert tls["spec"]["tls"] == [{"hosts": ["faceanalysis.local"], "secretName": "faceanalysis-tls"}]


def test_tls_needs_a_secret_name():
    with pytest.raises(helm.HelmError, match="secretName"):
        render({"image-input": {"ingress": {"enabled": True, "tls": {"enabled": True}}}})


def test_observability_switches(rendered_variants):
    on, off = rendered_variants["observability-on"], rendered_variants["observability-off"]
    assert len(on.of_kind("ServiceMonitor")) == 1 and len(on.of_kind("PrometheusRule")) == 1
    assert not off.of_kind("ServiceMonitor") and not off.of_kind("PrometheusRule")
    dashboards = [c for c in on.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert dashboards and not [c for c in off.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    # The PrometheusRule carries the rule file verbatim.
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert on.of_kind("PrometheusRule")[0]["spec"] == rules
    monitor = on.of_kind("ServiceMonitor")[0]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics" and monitor["endpoints"][0]["honorLabels"] is True


def test_redis_secret_generated_or_existing(rendered_variants):
    default, existing = rendered_variants["default"], rendered_variants["existing-redis-secret"]
    secret = default.get("Secret", "fa-redis-auth")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(secret["data"]["redis-password"]) > 20
    assert not [s for s in existing.of_kind("Secret") if "redis-password" in (s.get("data") or {})]
    for r, name, key in ((default, "fa-redis-auth", "redis-password"), (existing, "my-redis", "password")):
        # The `helm test` Pod's API key (test_edge.py) is the only other Secret reference.
        refs = [e["valueFrom"]["secretKeyRef"] for _, _, spec in _containers(r) for e in spec.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {}) and e["name"] != "FACEANALYSIS_API_KEY"]
        assert refs and all(ref == {"name": name, "key": key} for ref in refs)


def test_redis_statefulset(default_render):
    sts = default_render.get("StatefulSet", "fa-redis")
    assert sts["spec"]["serviceName"] == "fa-redis-headless"
    assert default_render.get("Service", "fa-redis-headless")["spec"]["clusterIP"] == "None"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    redis = sts["spec"]["template"]["spec"]["containers"][0]
    assert redis["image"].startswith("docker.io/library/redis:7.")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "redis-cli" in " ".join(redis[probe]["exec"]["command"])
    config = default_render.get("ConfigMap", "fa-redis")["data"]["redis.conf"]
    directives = [line.split()[0] for line in config.splitlines() if line.strip() and not line.startswith("#")]
    assert "appendonly" in directives and "requirepass" not in directives  # the password is in no ConfigMap


def test_models_init_container_or_baked(rendered_variants):
    for variant, expect_init in (("default", True), ("baked-models", False)):
        r = rendered_variants[variant]
        for name in ("fa-face-landmark", "fa-face-attributes"):
            spec = r.get("Deployment", name)["spec"]["template"]["spec"]
            inits = spec.get("initContainers", [])
            assert bool(inits) == expect_init
            if expect_init:
                service = name.removeprefix("fa-")
                assert inits[0]["command"] == ["faceanalysis", "models", "pull", "--only", service]
        for name in ("fa-image-input", "fa-data-storage"):
            assert "initContainers" not in r.get("Deployment", name)["spec"]["template"]["spec"]


def test_archive_volume(rendered_variants):
    def archive_volume(variant):
        spec = rendered_variants[variant].get("Deployment", "fa-data-storage")["spec"]["template"]["spec"]
        return next(v for v in spec["volumes"] if v["name"] == "archive")
    # By default the archive outlives the pod, on the chart's claim.
    assert archive_volume("default")["persistentVolumeClaim"]["claimName"] == "fa-data-storage-archive"
    rendered_variants["default"].get("PersistentVolumeClaim", "fa-data-storage-archive")
    assert "emptyDir" in archive_volume("archive-emptydir")


def test_config_values_become_env():
    r = render(merge(VARIANTS["default"], {"global": {"config": {"max_image_bytes": 20971520}},
                                           "image-input": {"config": {"log_level": "DEBUG"}}}))
    env = {e["name"]: e.get("value") for e in r.get("Deployment", "fa-image-input")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FACEANALYSIS_MAX_IMAGE_BYTES"] == "20971520"  # whole numbers stay whole
    assert env["FACEANALYSIS_LOG_LEVEL"] == "DEBUG"           # a service's own config wins


def test_notes_show_grpcurl(default_render):
    # What NOTES.txt says per edge and key source: test_edge.py.
    assert "grpcurl" in default_render.notes and "faceanalysis.local" in default_render.notes


def _containers(r):
    from .chart import pod_specs
    for name, _, spec in pod_specs(r):
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield name, c["name"], c


# --- the archive: the same answer from every data-storage replica ----------------------------

def archive_values(persistence: dict | None, **scaling) -> dict:
    storage: dict = {**scaling}
    if persistence is not None:
        storage["archive"] = {"persistence": persistence}
    return {"data-storage": storage}


@pytest.mark.parametrize("values,why", [
    (archive_values({"enabled": True, "accessModes": ["ReadWriteOnce"]},
                    autoscaling={"enabled": True, "maxReplicas": 3}), "up to 3 replicas \\(autoscaling.maxReplicas\\)"),
    (archive_values({"enabled": False}, replicaCount=2), "up to 2 replicas \\(replicaCount\\)"),
])
def test_more_than_one_replica_needs_a_shared_archive(values, why):
    """Replicas on their own archives would find and delete old results only where they were stored."""
    with pytest.raises(helm.HelmError, match=f"data-storage: {why} would each keep their own archive.*ReadWriteMany"):
        render(values)


def test_default_archive_is_one_replica_on_a_claim_rolled_out_by_recreate(rendered_variants):
    rendered = rendered_variants["default"]
    deployment = rendered.get("Deployment", "fa-data-storage")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # the claim attaches to one node
    assert not [h for h in rendered.of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == "fa-data-storage"]
    claim = rendered.get("PersistentVolumeClaim", "fa-data-storage-archive")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_a_read_write_many_archive_lets_data_storage_autoscale():
    rendered = render(archive_values({"enabled": True, "accessModes": ["ReadWriteMany"]},
                                     autoscaling={"enabled": True, "maxReplicas": 6}))
    deployment = rendered.get("Deployment", "fa-data-storage")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    hpa = rendered.get("HorizontalPodAutoscaler", "fa-data-storage")
    assert hpa["spec"]["maxReplicas"] == 6


# --- models from a shared, pre-filled volume -------------------------------------------------

def test_models_from_a_shared_volume_are_verified_not_pulled():
    claim = {"persistentVolumeClaim": {"claimName": "faceanalysis-models", "readOnly": True}}
    rendered = render({"global": {"models": {"source": "volume", "volume": claim}}})
    for service in ("face-landmark", "face-attributes"):
        pod = rendered.get("Deployment", f"fa-{service}")["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["command"] == ["faceanalysis", "models", "verify", "--only", service]
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in init["volumeMounts"]
        volume = next(v for v in pod["volumes"] if v["name"] == "models")
        assert volume == {"name": "models", **claim}
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
        assert mount["readOnly"] is True
    # Services without models get nothing of it.
    assert "initContainers" not in rendered.get("Deployment", "fa-image-input")["spec"]["template"]["spec"]


def test_a_shared_models_volume_must_be_named():
    with pytest.raises(helm.HelmError, match="global.models.source=volume needs global.models.volume"):
        render({"global": {"models": {"source": "volume"}}})


def _model_pods(rendered):
    for service in ("face-landmark", "face-attributes"):
        yield service, rendered.get("Deployment", f"fa-{service}")["spec"]["template"]["spec"]


def test_models_from_an_image_volume_are_verified_not_pulled(tmp_path):
    """global.models.volume may be any volume source, e.g. an OCI image of the files (Kubernetes
    1.33+ image volumes): its reference and pull policy reach every model pod as they were given."""
    source = {"image": {"reference": "registry.example/faceanalysis-models:1", "pullPolicy": "IfNotPresent"}}
    rendered = render({"global": {"models": {"source": "volume", "volume": source}}})
    for service, pod in _model_pods(rendered):
        (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
        assert volume == {"name": "models", **source}  # no emptyDir, nothing added or dropped
        (init,) = pod["initContainers"]
        assert init["command"] == ["faceanalysis", "models", "verify", "--only", service]
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in init["volumeMounts"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
        assert mount["readOnly"] is True  # image volumes are read-only
    # The Deployments are valid at the newest Kubernetes the schemas know (image volumes are not in the oldest).
    deployments = yaml.safe_dump_all([rendered.get("Deployment", f"fa-{s}") for s, _ in _model_pods(rendered)])
    problems = kubernetes_validate({"image-volume": deployments}, kube_versions()[-1], tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source,action", [("initContainer", "pull"), ("volume", "verify")])
def test_allow_unverified_reaches_the_models_init_container(source, action):
    """global.models.allowUnverified: the pull (or verify) init container accepts files no hash
    vouches for (DeepFace's official weights) through FACEANALYSIS_ALLOW_UNVERIFIED_MODELS."""
    claim = {"persistentVolumeClaim": {"claimName": "faceanalysis-models", "readOnly": True}}
    models = {"source": source, **({"volume": claim} if source == "volume" else {})}

    def init_env(allow: bool | None) -> dict[str, dict]:
        values = {"global": {"models": {**models, **({} if allow is None else {"allowUnverified": allow})}}}
        out = {}
        for service, pod in _model_pods(render(values)):
            (init,) = pod["initContainers"]
            assert init["command"] == ["faceanalysis", "models", action, "--only", service]
            out[service] = {e["name"]: e.get("value") for e in init["env"]}
        return out

    for service, env in init_env(True).items():
        assert env["FACEANALYSIS_ALLOW_UNVERIFIED_MODELS"] == "true", service
        assert env["FACEANALYSIS_MODELS_DIR"] == "/models"
    for allow in (None, False):
        for service, env in init_env(allow).items():
            assert "FACEANALYSIS_ALLOW_UNVERIFIED_MODELS" not in env, (service, allow)
