"""Admission, threads, probes and autoscaling as the chart derives them from a pod's resources.

The services refuse work beyond an admission limit (RESOURCE_EXHAUSTED at once) so that a
burst never gets a pod OOM-killed. The chart turns each container's memory limit into that
limit, points ONNX Runtime/OpenCV at the CPU limit, and scales on work in flight.
"""

from __future__ import annotations

import math
import re
import sys

import helm_python as helm
import pytest
import yaml

from .chart import CHART, RELEASE, ROOT, SERVICES, merge, render

try:
    from faceanalysis.runtime.config import Settings
except ImportError:  # not installed in editable mode: use the source tree
    sys.path.insert(0, str(ROOT / "services"))
    from faceanalysis.runtime.config import Settings

# The Settings field that caps each service's work; data-storage admits nothing.
ADMITS = {"image-input": "max_concurrent_images", "face-landmark": "max_concurrent_images",
          "face-attributes": "batch_queue_max_faces"}
MODEL_SERVICES = ("face-landmark", "face-attributes")
UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
         "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def mib(quantity) -> float:
    """A Kubernetes memory quantity in MiB (an independent reading, to check the chart's)."""
    if isinstance(quantity, (int, float)):
        return quantity / 1024**2
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    return float(number) * UNITS[unit] / 1024**2


def container(rendered, service: str) -> dict:
    return rendered.get("Deployment", f"{RELEASE}-{service}")["spec"]["template"]["spec"]["containers"][0]


def env(rendered, service: str) -> dict[str, dict]:
    return {e["name"]: e for e in container(rendered, service)["env"]}


def env_value(rendered, service: str, name: str) -> str | None:
    entry = env(rendered, service).get(name)
    return None if entry is None else entry.get("value")


def admission_values(values: dict, service: str) -> dict:
    """The admission values a service chart sees: its defaults under the given overrides."""
    defaults = yaml.safe_load((CHART / "charts" / service / "values.yaml").read_text())
    return merge(defaults, values.get(service) or {})


def admitted(rendered, service: str) -> int:
    return int(env_value(rendered, service, f"FACEANALYSIS_{ADMITS[service].upper()}"))


# --- the admission limit follows the memory limit ------------------------------------------------

@pytest.mark.parametrize(("service", "memory", "expected"), [
    ("image-input", "512Mi", 7),         # (512 - 160) / 48 = 7.3
    ("face-landmark", "1536Mi", 3),      # (1536 - 400) / 360 = 3.2
    ("image-input", "2Gi", 39),          # (2048 - 160) / 48 = 39.3
    ("image-input", "1.5Gi", 28),        # (1536 - 160) / 48 = 28.7
    ("image-input", "2000M", 36),        # 2000 MB = 1907.3 MiB: (1907.3 - 160) / 48 = 36.4
    ("image-input", 536870912, 7),       # plain bytes (512 MiB)
    ("image-input", "536870912", 7),
    ("face-landmark", "760Mi", 1),       # exactly the base plus one image
    ("face-attributes", "1Gi", 212),     # (1024 - 600) / 2
    ("face-attributes", "1G", 176),      # 953.7 MiB: (953.7 - 600) / 2 = 176.8
])
def test_admission_derived_from_memory_limit(service, memory, expected):
    r = render({service: {"resources": {"limits": {"memory": memory}}}})
    assert admitted(r, service) == expected
    # The derived limit fits the container, and one more item would not.
    a = admission_values({}, service)["admission"]
    base, per = mib(a["baseMemory"]), mib(a["perItemMemory"])
    assert base + expected * per <= mib(memory) < base + (expected + 1) * per


@pytest.mark.parametrize("memory", ["3Gi", "2500Mi", "4G", "3000000Ki"])
def test_admission_units_agree(memory):
    """Whatever the unit, the chart reads the same MiB as an independent parser."""
    a = {"baseMemory": "256Mi", "perItemMemory": "100Mi"}
    r = render({"image-input": {"resources": {"limits": {"memory": memory}}, "admission": a}})
    assert admitted(r, "image-input") == math.floor((mib(memory) - 256) / 100)


def test_every_variant_admits_what_its_memory_holds(rendered):
    for service, setting in ADMITS.items():
        values = admission_values(rendered.values, service)
        if setting in (values.get("config") or {}):
            continue
        limit, a = mib(values["resources"]["limits"]["memory"]), values["admission"]
        n = admitted(rendered, service)
        assert n >= 1
        assert mib(a["baseMemory"]) + n * mib(a["perItemMemory"]) <= limit, service
        assert limit < mib(a["baseMemory"]) + (n + 1) * mib(a["perItemMemory"]), service


def test_data_storage_admits_nothing(default_render):
    names = set(env(default_render, "data-storage"))
    assert not names & {"FACEANALYSIS_MAX_CONCURRENT_IMAGES", "FACEANALYSIS_BATCH_QUEUE_MAX_FACES",
                        "FACEANALYSIS_CPU_LIMIT"}


def test_derived_settings_are_valid_settings(default_render):
    """The Python side accepts what the chart renders (field types and bounds)."""
    for service in ADMITS:
        plain = {n.removeprefix("FACEANALYSIS_").lower(): e["value"]
                 for n, e in env(default_render, service).items() if n.startswith("FACEANALYSIS_") and "value" in e}
        plain.pop("redis_password", None)
        settings = Settings(**plain)
        assert getattr(settings, ADMITS[service]) == admitted(default_render, service)


# --- explicit settings win -----------------------------------------------------------------------

def test_service_config_wins_over_derived():
    r = render({"image-input": {"config": {"max_concurrent_images": 2}},
                "face-attributes": {"config": {"batch_queue_max_faces": 64}}})
    e = env(r, "image-input")
    assert [n for n in (x["name"] for x in container(r, "image-input")["env"])].count("FACEANALYSIS_MAX_CONCURRENT_IMAGES") == 1
    assert e["FACEANALYSIS_MAX_CONCURRENT_IMAGES"]["value"] == "2"
    assert admitted(r, "face-attributes") == 64


def test_global_config_wins_over_derived():
    r = render({"global": {"config": {"max_concurrent_images": 5}}})
    assert admitted(r, "image-input") == 5 and admitted(r, "face-landmark") == 5


def test_explicit_setting_needs_no_memory_limit_arithmetic():
    # A limit too small to derive anything is fine once the operator chose the number.
    r = render({"face-landmark": {"resources": {"limits": {"memory": "600Mi"}},
                                  "config": {"max_concurrent_images": 1}}})
    assert admitted(r, "face-landmark") == 1


def test_extra_env_is_not_duplicated():
    r = render({"face-landmark": {"extraEnv": [{"name": "FACEANALYSIS_CPU_LIMIT", "value": "2"}]}})
    names = [x["name"] for x in container(r, "face-landmark")["env"]]
    assert names.count("FACEANALYSIS_CPU_LIMIT") == 1
    assert env_value(r, "face-landmark", "FACEANALYSIS_CPU_LIMIT") == "2"


# --- a limit that cannot hold the work fails the render ------------------------------------------

def test_too_small_limit_fails_with_a_clear_message():
    with pytest.raises(helm.HelmError, match=r"face-landmark: resources.limits.memory 700Mi is too small.*760Mi or more"):
        render({"face-landmark": {"resources": {"limits": {"memory": "700Mi"}}}})
    with pytest.raises(helm.HelmError, match=r"image-input: resources.limits.memory 200Mi is too small"):
        render({"image-input": {"resources": {"limits": {"memory": "200Mi"}}}})


def test_missing_limit_fails_with_a_clear_message():
    with pytest.raises(helm.HelmError, match=r"face-attributes: resources.limits.memory is required.*batch_queue_max_faces"):
        render({"face-attributes": {"resources": {"limits": {"memory": None}}}})


def test_unreadable_quantity_fails():
    with pytest.raises(helm.HelmError, match=r"cannot read the memory quantity \"1.5GB\""):
        render({"image-input": {"resources": {"limits": {"memory": "1.5GB"}}}})


# --- threads follow the container's limits -------------------------------------------------------

def test_cpu_limit_comes_from_the_container_limit(rendered):
    for service in MODEL_SERVICES:
        c = container(rendered, service)
        ref = env(rendered, service)["FACEANALYSIS_CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.cpu" and str(ref["divisor"]) == "1"
        assert ref.get("containerName", c["name"]) == c["name"]
        assert c["resources"]["limits"]["cpu"], f"{service}: the downward API would report the node's CPUs"


def test_face_landmark_threads_follow_admission():
    for memory, images in (("1536Mi", 3), ("4Gi", 10)):
        r = render({"face-landmark": {"resources": {"limits": {"memory": memory}}}})
        assert env_value(r, "face-landmark", "FACEANALYSIS_MAX_WORKERS") == str(images)
    r = render({"face-landmark": {"config": {"max_workers": 8}}})
    assert env_value(r, "face-landmark", "FACEANALYSIS_MAX_WORKERS") == "8"


# --- autoscaling on work in flight ---------------------------------------------------------------

def _pods_metric(hpa) -> dict:
    (metric,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    return metric


def test_hpa_scales_on_work_in_flight_below_capacity(rendered_variants):
    checked = 0
    for variant in ("custom-metric", "production"):
        r = rendered_variants[variant]
        for service in ADMITS:
            hpa = r.get("HorizontalPodAutoscaler", f"{RELEASE}-{service}")
            if not any(m["type"] == "Pods" for m in hpa["spec"]["metrics"]):
                continue
            metric = _pods_metric(hpa)
            assert metric["metric"]["name"] == "faceanalysis_work_in_flight"
            assert metric["target"]["type"] == "AverageValue"
            # Pods are added before any of them has to refuse work.
            assert 1 <= float(metric["target"]["averageValue"]) < admitted(r, service), (variant, service)
            checked += 1
    assert checked >= 4


def test_hpa_default_target_is_three_quarters_of_capacity(rendered_variants):
    r = rendered_variants["custom-metric"]
    for service in ADMITS:
        target = _pods_metric(r.get("HorizontalPodAutoscaler", f"{RELEASE}-{service}"))["target"]["averageValue"]
        assert target == str(max(1, math.floor(admitted(r, service) * 0.75)))
    # data-storage admits nothing: it scales on open calls, with the target it is given.
    metric = _pods_metric(r.get("HorizontalPodAutoscaler", f"{RELEASE}-data-storage"))
    assert metric["metric"]["name"] == "faceanalysis_grpc_requests_in_flight"


def test_hpa_target_follows_memory_and_explicit_value():
    on = {"autoscaling": {"inFlight": {"enabled": True}}}
    small = render({"face-landmark": {**on, "resources": {"limits": {"memory": "760Mi"}}}})  # 1 image
    assert _pods_metric(small.get("HorizontalPodAutoscaler", f"{RELEASE}-face-landmark"))["target"]["averageValue"] == "1"
    big = render({"face-landmark": {**on, "resources": {"limits": {"memory": "8Gi"}}}})  # 21 images
    assert _pods_metric(big.get("HorizontalPodAutoscaler", f"{RELEASE}-face-landmark"))["target"]["averageValue"] == "15"
    chosen = render({"face-landmark": {"autoscaling": {"inFlight": {"enabled": True, "averageValue": "2"}}}})
    assert _pods_metric(chosen.get("HorizontalPodAutoscaler", f"{RELEASE}-face-landmark"))["target"]["averageValue"] == "2"


def test_data_storage_in_flight_needs_a_target():
    with pytest.raises(helm.HelmError, match="data-storage: autoscaling.inFlight.averageValue is required"):
        render({"data-storage": {"autoscaling": {"enabled": True, "inFlight": {"enabled": True, "averageValue": ""}},
                                 "archive": {"persistence": {"accessModes": ["ReadWriteMany"]}}}})


# --- probes of a busy pod ------------------------------------------------------------------------

def test_probe_timeouts_tolerate_a_busy_pod(rendered):
    for d in rendered.of_kind("Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe].get("timeoutSeconds", 1) >= 3, (d["metadata"]["name"], probe)
        # Liveness outlasts the drain: a pod finishing its calls after SIGTERM is not killed.
        shutdown = float(env_value(rendered, d["metadata"]["name"].removeprefix(f"{RELEASE}-"),
                                   "FACEANALYSIS_SHUTDOWN_GRACE_SECONDS") or 25)
        live = c["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] > shutdown
        assert live["grpc"]["service"] == ""


def test_probe_settings_are_configurable():
    r = render({"face-attributes": {"probes": {"readiness": {"timeoutSeconds": 7, "periodSeconds": 9},
                                               "liveness": {"failureThreshold": 12}}}})
    c = container(r, "face-attributes")
    assert c["readinessProbe"]["timeoutSeconds"] == 7 and c["readinessProbe"]["periodSeconds"] == 9
    assert c["livenessProbe"]["failureThreshold"] == 12


# --- connections age out, calls get time to finish -----------------------------------------------

def test_connection_age_and_grace(default_render):
    for service in SERVICES:
        age = float(env_value(default_render, service, "FACEANALYSIS_MAX_CONNECTION_AGE_SECONDS"))
        grace = float(env_value(default_render, service, "FACEANALYSIS_MAX_CONNECTION_AGE_GRACE_SECONDS"))
        # New pods get traffic within minutes; a stream on an aged connection gets minutes to finish.
        assert 0 < age <= 300 and grace >= age
        spec = default_render.get("Deployment", f"{RELEASE}-{service}")["spec"]["template"]["spec"]
        shutdown = float(env_value(default_render, service, "FACEANALYSIS_SHUTDOWN_GRACE_SECONDS"))
        assert spec["terminationGracePeriodSeconds"] == shutdown + 15

