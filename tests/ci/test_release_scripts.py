"""The Python helpers of the release and e2e workflows, run here on the real chart and photo:
set_chart_release.py (pins the packaged chart's images to the release) and big_photo.py (the
multi-MB photo the e2e job sends through the Gateway)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.ci.workflows import ROOT, SCRIPTS_DIR
from tests.support import SHARED

SERVICES = ["image-input", "face-landmark", "face-attributes", "data-storage"]
DIGESTS = {s: "sha256:" + hashlib.sha256(s.encode()).hexdigest() for s in SERVICES}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_chart_release = _module("set_chart_release")
big_photo = _module("big_photo")


@pytest.fixture
def chart(tmp_path) -> Path:
    """A copy of the umbrella chart (its subcharts link to the library chart relatively)."""
    shutil.copytree(ROOT / "charts" / "faceanalysis", tmp_path / "faceanalysis", symlinks=True)
    return tmp_path / "faceanalysis"


def rendered_images(chart: Path) -> dict[str, list[str]]:
    """Workload name -> container images, from the chart's defaults (Helm SDK, no cluster)."""
    import helm_python as helm

    helm.disable_logging()
    with helm.Chart.load(chart) as loaded:
        out = loaded.render({}, name="fa", namespace="faceanalysis", is_install=True)
    images = {}
    for source, text in out.items():
        if not source.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            spec = ((doc or {}).get("spec") or {})
            pod = (spec.get("template") or {}).get("spec") or (spec if doc and doc["kind"] == "Pod" else None)
            if pod:
                containers = pod["containers"] + pod.get("initContainers", [])
                images[doc["metadata"]["name"]] = [c["image"] for c in containers]
    return images


def test_release_values_pin_every_image_to_the_release(chart):
    before = (chart / "values.yaml").read_text()
    args = [str(chart), "--registry", "ghcr.io/acme", "--tag", "1.2.3"]
    for service, digest in DIGESTS.items():
        args += ["--digest", f"{service}={digest}"]
    assert set_chart_release.main(args) == 0

    images = rendered_images(chart)
    for service in SERVICES:
        want = f"ghcr.io/acme/faceanalysis-{service}:1.2.3@{DIGESTS[service]}"
        assert set(images[f"fa-{service}"]) == {want}, images[f"fa-{service}"]
    # helm test runs the image-input image: the same pinned one.
    assert set(images["fa-api-test"]) == {f"ghcr.io/acme/faceanalysis-image-input:1.2.3@{DIGESTS['image-input']}"}
    # Comments (and with them readme-generator's @param docs) survive the edit.
    after = (chart / "values.yaml").read_text()
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == \
           [line for line in after.splitlines() if line.lstrip().startswith("#")]


def test_release_values_refuse_bad_input_and_a_changed_layout(chart):
    with pytest.raises(SystemExit, match="lower-case"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/ACME", "--tag", "1.2.3"])
    with pytest.raises(SystemExit, match="SERVICE=sha256"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/acme", "--tag", "1", "--digest", "redis=sha256:00"])
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("\n  image:\n", "\n  images:\n", 1))
    with pytest.raises(SystemExit, match="layout changed"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/acme", "--tag", "1.2.3"])


def test_e2e_photo_is_the_shared_one_and_grows_to_several_mb(tmp_path):
    """e2e-tools.sh downloads face_recognition's obama.jpg and checks a sha256: the same bytes as
    the shared copy; big_photo.py turns it into a multi-MB JPEG within image-input's limits."""
    source = SHARED / "images" / "face_recognition" / "obama.jpg"
    script = (SCRIPTS_DIR / "e2e-tools.sh").read_text()
    pinned = re.search(r'PHOTO_SHA256="([0-9a-f]{64})"', script).group(1)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == pinned

    out = tmp_path / "photo.jpg"
    assert big_photo.main([str(source), str(out), "--min-mb", "4"]) == 0
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "JPEG" and img.width * img.height <= big_photo.MAX_PIXELS
    assert 4e6 <= out.stat().st_size <= 20 * 2**20  # image-input's max_image_bytes is 20 MiB


@pytest.mark.parametrize("tag, ok", [("v{version}", True), ("v{version}-rc.1", False), ("v9.9.9", False),
                                     ("{version}", False), ("vnext", False)])
def test_release_version_comes_from_the_tag_and_must_match_pyproject(tmp_path, tag, ok):
    """release-version.sh refuses a tag that is not pyproject.toml's version, and writes the
    lower-case ghcr.io names the images and the chart are pushed under."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    output = tmp_path / "output"
    env = {"PATH": "/usr/bin:/bin", "GITHUB_REF_NAME": tag.format(version=version),
           "GITHUB_REPOSITORY_OWNER": "Acme-Org", "GITHUB_OUTPUT": str(output), "SERVICE": "face-landmark"}
    proc = subprocess.run(["bash", str(SCRIPTS_DIR / "release-version.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode == 0) == ok, proc.stderr
    if ok:
        assert output.read_text().splitlines() == [
            f"version={version}", f"tag=v{version}", "registry=ghcr.io/acme-org",
            "image=ghcr.io/acme-org/faceanalysis-face-landmark"]
