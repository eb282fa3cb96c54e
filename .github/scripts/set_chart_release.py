"""Pin the umbrella chart and its subcharts to a release before `helm package`.

Usage: python set_chart_release.py CHART_DIR --registry ghcr.io/OWNER --tag 1.2.3 \
           [--digest image-input=sha256:...] ...

1. Chart.yaml of the umbrella and of every subchart under CHART_DIR/charts: `version` and the
   `dependencies[].version` become the release, so every object's helm.sh/chart label names it
   and `helm dependency list` finds no "wrong version". `appVersion` becomes the release too, as
   "X.Y.Z" without the tag's "v", in the umbrella and the four service charts: it is the
   app.kubernetes.io/version label and the image tag fallback (faceanalysis.image in the library
   chart; the umbrella's `helm test` Pod uses the umbrella's), and the release pushes its images
   as faceanalysis-<service>:X.Y.Z. The redis chart keeps its appVersion, the version of the
   upstream Redis it runs (its image tag is in its values.yaml); the library chart has none.
   `helm package --app-version` alone would set only the umbrella's: each subchart's labels and
   image tag fallback read the subchart's own Chart.yaml.
2. values.yaml of the umbrella: global.image.registry and global.image.tag, and for every
   service built by the release its image.digest, so `helm install` of that chart runs exactly
   the signed images (the registry is not in any Chart.yaml, the digests are known only now).

The edits are textual (comments and @param docs stay, `helm show values` keeps them), then
checked by parsing: each result must equal the original with exactly these keys changed, or
nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

SERVICES = ("image-input", "face-landmark", "face-attributes", "data-storage")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# What release-version.sh accepts from a tag (vX.Y.Z[-suffix], less the "v"): a SemVer chart version.
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block that starts at lines[start] (a key at `indent` spaces)."""
    for i in range(start + 1, len(lines)):
        text = lines[i]
        if text.strip() and not text.lstrip().startswith("#") and len(text) - len(text.lstrip()) <= indent:
            return i
    return len(lines)


def _find_key(lines: list[str], key: str, indent: int, start: int = 0, end: int | None = None,
              where: str = "values.yaml") -> int:
    pattern = re.compile(rf"^{' ' * indent}{re.escape(key)}:(\s|$)")
    for i in range(start, len(lines) if end is None else end):
        if pattern.match(lines[i]):
            return i
    raise SystemExit(f"{where}: no `{key}:` at indent {indent} (the chart's layout changed: update this script)")


def _set_scalar(lines: list[str], index: int, value: str, where: str = "values.yaml") -> None:
    """Replace the scalar value of `key: value  # comment` at lines[index], keeping the comment."""
    match = re.match(r"^(\s*[\w.-]+:)\s*(\"[^\"]*\"|'[^']*'|[^#\s]*)(\s*#.*)?$", lines[index])
    if not match:
        raise SystemExit(f"{where} line {index + 1} is not a plain `key: value`: {lines[index]!r} "
                         "(the chart's layout changed: update this script)")
    lines[index] = f"{match.group(1)} {value}{match.group(3) or ''}"


def pin(text: str, registry: str, tag: str, digests: dict[str, str]) -> str:
    """values.yaml text with the release's registry, tag and digests written in."""
    lines = text.splitlines()
    glob = _find_key(lines, "global", 0)
    image = _find_key(lines, "image", 2, glob + 1, _block_end(lines, glob, 0))
    image_end = _block_end(lines, image, 2)
    _set_scalar(lines, _find_key(lines, "registry", 4, image + 1, image_end), registry)
    _set_scalar(lines, _find_key(lines, "tag", 4, image + 1, image_end), f'"{tag}"')
    # Insert bottom-up so earlier indexes stay valid.
    for service in sorted(digests, key=lambda s: _find_key(lines, s, 0), reverse=True):
        top = _find_key(lines, service, 0)
        end = _block_end(lines, top, 0)
        if any(re.match(r"^  image:", line) for line in lines[top + 1:end]):
            raise SystemExit(f"values.yaml: {service} already has an image block: update this script")
        lines[top + 1:top + 1] = ["  image:", f'    digest: "{digests[service]}"']
    return "\n".join(lines) + "\n"


def expected(original: dict, registry: str, tag: str, digests: dict[str, str]) -> dict:
    want = copy.deepcopy(original)
    want["global"]["image"].update(registry=registry, tag=tag)
    for service, digest in digests.items():
        want.setdefault(service, {}).setdefault("image", {})["digest"] = digest
    return want


def pin_chart(text: str, version: str, app_version: bool, where: str) -> str:
    """Chart.yaml text with the release as its version and its dependencies' versions, and with
    app_version as its appVersion too."""
    lines = text.splitlines()
    _set_scalar(lines, _find_key(lines, "version", 0, where=where), version, where)
    if app_version:
        _set_scalar(lines, _find_key(lines, "appVersion", 0, where=where), f'"{version}"', where)
    if any(line.startswith("dependencies:") for line in lines):
        top = _find_key(lines, "dependencies", 0, where=where)
        for i in range(top + 1, _block_end(lines, top, 0)):
            if re.match(r"^\s+version:", lines[i]):
                _set_scalar(lines, i, version, where)
    return "\n".join(lines) + "\n"


def chart_expected(original: dict, version: str, app_version: bool) -> dict:
    want = copy.deepcopy(original)
    want["version"] = version
    if app_version:
        want["appVersion"] = version
    for dependency in want.get("dependencies") or []:
        dependency["version"] = version
    return want


def chart_files(chart: Path) -> dict[Path, bool]:
    """The umbrella's Chart.yaml and each of its subcharts' -> whether its appVersion follows the
    release (the charts that run an image the release builds; the umbrella's `helm test` Pod runs
    image-input's). Every dependency must be a directory under charts/ and every such directory a
    dependency, so no chart is packaged unpinned."""
    where = chart / "Chart.yaml"
    dependencies = yaml.safe_load(where.read_text()).get("dependencies") or []
    files = {where: True}
    for dependency in dependencies:
        name = dependency.get("name")
        if dependency.get("repository") != f"file://charts/{name}" or not (chart / "charts" / str(name)).is_dir():
            raise SystemExit(f"{where}: dependency {name!r} is not the directory charts/{name} "
                             "(the chart's layout changed: update this script)")
        files[chart / "charts" / name / "Chart.yaml"] = name in SERVICES
    names = {d["name"] for d in dependencies}
    strays = sorted({p.name for p in (chart / "charts").iterdir() if p.is_dir()} - names)
    missing = [s for s in SERVICES if s not in names]
    if strays or missing:
        raise SystemExit(f"{where}: " + "; ".join([f"charts/{s} is not a dependency" for s in strays]
                                                 + [f"no dependency {s}" for s in missing])
                         + " (the chart's layout changed: update this script)")
    return files


def parse_digests(items: list[str]) -> dict[str, str]:
    digests = {}
    for item in items:
        service, _, digest = item.partition("=")
        if service not in SERVICES or not DIGEST.match(digest):
            raise SystemExit(f"--digest {item!r}: want SERVICE=sha256:<64 hex>, SERVICE one of {', '.join(SERVICES)}")
        digests[service] = digest
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--registry", required=True, help="e.g. ghcr.io/owner (lower case)")
    parser.add_argument("--tag", required=True, help="version of the release (image tag, chart version), e.g. 1.2.3")
    parser.add_argument("--digest", action="append", default=[], metavar="SERVICE=sha256:...")
    args = parser.parse_args(argv)
    if args.registry != args.registry.lower() or not re.match(r"^[a-z0-9.-]+(/[a-z0-9._-]+)*$", args.registry):
        raise SystemExit(f"--registry {args.registry!r}: must be a lower-case registry/path")
    digests = parse_digests(args.digest)
    version = args.tag
    if not VERSION.match(version):
        raise SystemExit(f"--tag {version!r}: want the release's version X.Y.Z[-suffix] (it versions the charts too)")

    # Every file is edited and checked before any is written: a layout error leaves the chart as it was.
    edits, kept = {}, []
    for path, app_version in chart_files(args.chart).items():
        text = path.read_text()
        new = pin_chart(text, version, app_version, str(path))
        if yaml.safe_load(new) != chart_expected(yaml.safe_load(text), version, app_version):
            raise SystemExit(f"{path}: the edit changed more than the release keys (the layout changed?)")
        edits[path] = new
        kept += [] if app_version else [path.parent.name]
    path = args.chart / "values.yaml"
    text = path.read_text()
    new = pin(text, args.registry, version, digests)
    if yaml.safe_load(new) != expected(yaml.safe_load(text), args.registry, version, digests):
        raise SystemExit("values.yaml: the edit changed more than the release keys (the layout changed?)")
    edits[path] = new
    for path, new in edits.items():
        path.write_text(new)
    print(f"{args.chart}: every chart version {version}, appVersion {version} (kept by {', '.join(kept)}), "
          f"images {args.registry}/faceanalysis-<service>:{version}"
          + (f", digests for {', '.join(sorted(digests))}" if digests else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
