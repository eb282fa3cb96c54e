"""checkov (kubernetes framework, offline) on the rendered chart: zero failed checks.
Skipped checks and their reasons: tests/deploy/checkov-skips.yaml."""

from __future__ import annotations

from pathlib import Path

from .tools import run_checkov

SKIPS = Path(__file__).with_name("checkov-skips.yaml")


def test_checkov_kubernetes(rendered_variants, tmp_path):
    # The defaults, production and the variants that add objects (PVC, Pods metric, the Ingress,
    # certificates and their volumes, the key Secret or not).
    for name in ("default", "production", "custom-metric", "ingress", "internal-tls", "archive-emptydir",
                 "existing-redis-secret", "existing-api-keys"):
        (tmp_path / f"{name}.yaml").write_text(rendered_variants[name].text())
    report = run_checkov("kubernetes", tmp_path, SKIPS)
    assert report["summary"]["passed"] > 100


def test_annotation_skips_are_listed(rendered_variants):
    """Resource-scoped skips (checkov.io/skipN annotations) are all listed, with reasons."""
    import yaml
    listed = {entry["id"] for entry in yaml.safe_load(SKIPS.read_text())["annotations"] if entry["reason"].strip()}
    used = {value.split("=", 1)[0] for d in rendered_variants["default"].docs
            for key, value in (d["metadata"].get("annotations") or {}).items() if key.startswith("checkov.io/skip")}
    assert used == listed
