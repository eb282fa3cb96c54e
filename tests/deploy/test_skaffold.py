"""skaffold.yaml against the published v4beta13 schema (kept in ../shared/schemas)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .chart import ROOT

SCHEMA = ROOT.parent / "shared" / "schemas" / "skaffold-v4beta13.json"
SERVICES = ["image-input", "face-landmark", "face-attributes", "data-storage"]


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"{SCHEMA} missing (clone shared/ beside the repo)")
def test_skaffold_schema():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--schemafile", str(SCHEMA), str(ROOT / "skaffold.yaml")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_skaffold_builds_and_deploys_the_chart():
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta13"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert sorted(artifacts) == sorted(f"faceanalysis-{s}" for s in SERVICES)
    for service in SERVICES:
        artifact = artifacts[f"faceanalysis-{service}"]
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == f"docker/{service}.Dockerfile"
    (release,) = config["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "charts/faceanalysis"
    templates = release["setValueTemplates"]
    for service in SERVICES:
        key = f"faceanalysis_{service.replace('-', '_')}"
        assert templates[f"{service}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"{service}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}"
    assert {p["name"] for p in config["profiles"]} >= {"kind", "minikube"}
