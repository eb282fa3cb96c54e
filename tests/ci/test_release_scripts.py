"""The Python helpers of the release and e2e workflows, run here on the real chart and photo:
set_chart_release.py (pins the packaged chart, its subcharts and its images to the release) and
big_photo.py (the multi-MB photo the e2e job sends through the Gateway)."""

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


def render(chart: Path | str) -> list[dict]:
    """The objects a chart (directory or packaged .tgz) renders with its defaults (Helm SDK, no cluster)."""
    import helm_python as helm

    helm.disable_logging()
    with helm.Chart.load(chart) as loaded:
        out = loaded.render({}, name="fa", namespace="faceanalysis", is_install=True)
    return [doc for source, text in out.items() if source.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def rendered_images(docs: list[dict]) -> dict[str, list[str]]:
    """Workload name -> container images."""
    images = {}
    for doc in docs:
        spec = doc.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or (spec if doc["kind"] == "Pod" else None)
        if pod:
            containers = pod["containers"] + pod.get("initContainers", [])
            images[doc["metadata"]["name"]] = [c["image"] for c in containers]
    return images


def pin(chart: Path, version: str = "1.2.3") -> None:
    args = [str(chart), "--registry", "ghcr.io/acme", "--tag", version]
    for service, digest in DIGESTS.items():
        args += ["--digest", f"{service}={digest}"]
    assert set_chart_release.main(args) == 0


def chart_texts(chart: Path) -> dict[str, str]:
    return {str(p.relative_to(chart)): p.read_text() for p in sorted(chart.rglob("*.yaml")) if not p.is_symlink()}


def test_release_values_pin_every_image_to_the_release(chart):
    before = (chart / "values.yaml").read_text()
    pin(chart)

    images = rendered_images(render(chart))
    for service in SERVICES:
        want = f"ghcr.io/acme/faceanalysis-{service}:1.2.3@{DIGESTS[service]}"
        assert set(images[f"fa-{service}"]) == {want}, images[f"fa-{service}"]
    # helm test runs the image-input image: the same pinned one.
    assert set(images["fa-api-test"]) == {f"ghcr.io/acme/faceanalysis-image-input:1.2.3@{DIGESTS['image-input']}"}
    # Comments (and with them readme-generator's @param docs) survive the edit.
    after = (chart / "values.yaml").read_text()
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == \
           [line for line in after.splitlines() if line.lstrip().startswith("#")]


def test_the_packaged_release_is_one_version_throughout(chart, tmp_path):
    """What release-chart.sh publishes: after pinning, `helm lint` and the dependency check pass and
    `helm package` (no --version/--app-version) gives faceanalysis-X.Y.Z.tgz whose every object
    names the release in its helm.sh/chart and app.kubernetes.io/version labels and runs the
    release's images, registry/faceanalysis-<service>:X.Y.Z@sha256:... (the tag the images job
    pushes is X.Y.Z, so appVersion is X.Y.Z, not the git tag vX.Y.Z)."""
    import helm_python as helm

    release = "1.2.3-rc.1"  # a pre-release too: the "-" survives into labels and archive name
    before = chart_texts(chart)
    pin(chart, release)
    after = chart_texts(chart)
    # Only the release keys moved: every comment line of every Chart.yaml and values.yaml stays.
    assert before.keys() == after.keys()
    for name in before:
        assert [x for x in before[name].splitlines() if x.lstrip().startswith("#")] == \
               [x for x in after[name].splitlines() if x.lstrip().startswith("#")], name

    report = helm.lint(chart, strict=True, namespace="faceanalysis")
    problems = report["errors"] + [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    subcharts = sorted(p.parent for p in (chart / "charts").glob("*/Chart.yaml"))
    for directory in [chart, *subcharts]:
        for dependency in helm.dependency_list(directory):
            assert (dependency["version"], dependency["status"]) == (release, "unpacked"), (directory, dependency)

    archive = helm.package(chart, destination=tmp_path)
    assert Path(archive).name == f"faceanalysis-{release}.tgz"
    redis_app_version = yaml.safe_load((ROOT / "charts/faceanalysis/charts/redis/Chart.yaml").read_text())["appVersion"]
    with helm.Chart.load(archive) as loaded:
        assert (loaded.metadata["version"], loaded.metadata["appVersion"]) == (release, release)
        versions = {d["name"]: (d["version"], d.get("appVersion")) for d in loaded.dependencies}
    assert versions == {**{s: (release, release) for s in SERVICES},
                        "redis": (release, redis_app_version), "faceanalysis-common": (release, None)}

    docs = render(archive)
    charts = set()
    for doc in docs:
        labels = doc["metadata"]["labels"]
        chart_label = labels["helm.sh/chart"]
        charts.add(chart_label)
        # Redis's objects carry the version of the Redis they run; the rest the release's.
        want = redis_app_version if chart_label.startswith("redis-") else release
        assert labels["app.kubernetes.io/version"] == want, (doc["kind"], doc["metadata"]["name"], labels)
    assert charts == {f"{name}-{release}" for name in ["faceanalysis", "redis", *SERVICES]}
    ours = re.compile(rf"^ghcr\.io/acme/faceanalysis-(?P<service>[a-z-]+):{re.escape(release)}"
                      r"@(?P<digest>sha256:[0-9a-f]{64})$")
    found = set()
    for workload, images in rendered_images(docs).items():
        for image in images:
            if "faceanalysis-" not in image:
                assert workload == "fa-redis", image  # redis and its exporter: upstream images
                continue
            match = ours.match(image)
            assert match and DIGESTS[match["service"]] == match["digest"], (workload, image)
            found.add(match["service"])
    assert found == set(SERVICES)


def test_release_values_refuse_bad_input_and_a_changed_layout(chart):
    with pytest.raises(SystemExit, match="lower-case"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/ACME", "--tag", "1.2.3"])
    with pytest.raises(SystemExit, match="SERVICE=sha256"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/acme", "--tag", "1", "--digest", "redis=sha256:00"])
    # The git tag's "v" is not part of the version (nor of the images' tag).
    with pytest.raises(SystemExit, match="X.Y.Z"):
        set_chart_release.main([str(chart), "--registry", "ghcr.io/acme", "--tag", "v1.2.3"])
    pristine = chart_texts(chart)
    changes = [
        ("values.yaml", "\n  image:\n", "\n  images:\n"),
        # A service chart without appVersion, a dependency in flow style, one that is not a directory.
        ("charts/face-landmark/Chart.yaml", 'appVersion: "0.1.0"\n', ""),
        ("charts/redis/Chart.yaml",
         "  - name: faceanalysis-common\n    version: 0.1.0\n    repository: file://../faceanalysis-common\n",
         "  - {name: faceanalysis-common, version: 0.1.0, repository: file://../faceanalysis-common}\n"),
        ("Chart.yaml", "repository: file://charts/redis", "repository: oci://registry.example/charts"),
    ]
    for name, old, new in changes:
        path = chart / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(SystemExit, match="layout changed"):
            set_chart_release.main([str(chart), "--registry", "ghcr.io/acme", "--tag", "1.2.3"])
        # Nothing was written: every file is checked before any is.
        assert chart_texts(chart) == {**pristine, name: text.replace(old, new, 1)}, name
        path.write_text(text)
    (chart / "charts" / "extra").mkdir()
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
