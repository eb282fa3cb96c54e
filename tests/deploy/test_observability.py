"""Alert rules and dashboards: promtool checks them, and every faceanalysis_* metric they (and
the HPA) use is one the services really expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from .chart import CHART, ROOT, SERVICES, render

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
METRIC = re.compile(r"\bfaceanalysis_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool missing (Debian package prometheus)")


def dashboard_exprs() -> dict[str, str]:
    """'<file>: <panel> [refId]' -> PromQL with Grafana's variables replaced by plain values."""
    exprs = {}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "5m").replace("$service", ".*")
                exprs[f"{path.name}: {panel['title']} [{target['refId']}]"] = expr
    return exprs


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (rules, dashboards, HPA custom metric)."""
    uses: dict[str, set[str]] = {}
    for where, text in [("prometheus-rules.yaml", RULES.read_text()), *dashboard_exprs().items()]:
        for name in METRIC.findall(text):
            uses.setdefault(name, set()).add(where.split(":")[0])
    hpas = render({s: {"autoscaling": {"inFlight": {"enabled": True}}} for s in SERVICES}).of_kind("HorizontalPodAutoscaler")
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                uses.setdefault(metric["pods"]["metric"]["name"], set()).add("HPA")
    return uses


def exposed_families(exposition: str) -> set[str]:
    return {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}


def missing_metrics(families: set[str]) -> dict[str, set[str]]:
    def known(name: str) -> bool:
        return name in families or any(name.endswith(s) and name[: -len(s)] in families for s in HISTOGRAM_SUFFIXES)
    return {name: where for name, where in referenced_metrics().items() if not known(name)}


@needs_promtool
def test_promtool_check_rules():
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_cover_every_alert():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case.get("alert_rule_test", [])}
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"
    proc = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """promtool has no offline query parser, so every panel query becomes a recording rule."""
    exprs = dashboard_exprs()
    assert exprs
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs.values())]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n" + "\n".join(f"{i}: {k}" for i, k in enumerate(exprs))


def test_dashboards_are_grafana_json():
    assert [p.name for p in DASHBOARDS] == ["faceanalysis-overview.json"]
    board = json.loads(DASHBOARDS[0].read_text())
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    queries = " ".join(dashboard_exprs().values())
    for needed in ("faceanalysis_grpc_requests_total", "faceanalysis_grpc_request_duration_seconds_bucket",
                   "faceanalysis_model_inference_duration_seconds_bucket", "faceanalysis_model_batch_size",
                   "faceanalysis_faces_per_image", "kube_horizontalpodautoscaler_status_current_replicas",
                   "faceanalysis_cache_lookups_total", "redis_up", "faceanalysis_work_in_flight",
                   "faceanalysis_work_capacity", "faceanalysis_admission_rejections_total"):
        assert needed in queries, needed


def test_referenced_metrics_are_registered():
    """Fast check against the metrics module itself (no services needed)."""
    from prometheus_client import generate_latest
    try:
        import faceanalysis.runtime.metrics  # noqa: F401  (registers the metrics)
    except ImportError:
        import sys
        sys.path.insert(0, str(ROOT / "services"))
        import faceanalysis.runtime.metrics  # noqa: F401
    assert not missing_metrics(exposed_families(generate_latest().decode()))


def test_referenced_metrics_exist_in_running_services(local_stack):
    """Every faceanalysis_* metric of the rules, dashboards and HPA is on some service's /metrics."""
    families: set[str] = set()
    for service, url in local_stack.metrics_urls.items():
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "faceanalysis_serving" in text, f"{service}: {url} does not look like faceanalysis metrics"
        families |= exposed_families(text)
    assert not missing_metrics(families)


def test_helm_test_pod_commands_work(local_stack, default_render, tmp_path):
    """The `helm test` Pod's commands, run as written against the local stack (address and
    mounted paths swapped for local ones): health check, then one analysis of the tiny image."""
    import os
    import sys

    pod = default_render.get("Pod", "fa-api-test")
    images = tmp_path / "images"
    images.mkdir()
    (images / "tiny.png").write_bytes((CHART / "files" / "test-image.png").read_bytes())
    target = local_stack.target("image-input")
    exe = Path(sys.executable).parent / "faceanalysis"
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        cmd = [str(exe) if c == "faceanalysis" else c for c in container["command"]]
        cmd = [target if c.startswith("fa-image-input.") else c for c in cmd]
        cmd = [str(images) if c == "/images" else str(tmp_path / "out") if c == "/tmp/out" else c for c in cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "TQDM_DISABLE": "1"})
        assert proc.returncode == 0, f"{container['name']}: {cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert list((tmp_path / "out").glob("*.json"))
