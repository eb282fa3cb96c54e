"""Pin the umbrella chart's default images to a release before `helm package`.

Usage: python set_chart_release.py CHART_DIR --registry ghcr.io/OWNER --tag 1.2.3 \
           [--digest image-input=sha256:...] ...

Why edit values.yaml: each subchart falls back to its *own* appVersion for the image tag
(faceanalysis.image in the library chart), not the umbrella's, so `helm package --app-version`
alone would not move the images. The release therefore writes, in the packaged chart's
values.yaml, global.image.registry and global.image.tag, and for every service built by the
release its image.digest, so `helm install` of that chart runs exactly the signed images.

The edit is textual (comments and @param docs stay, `helm show values` keeps them), then checked
by parsing: the result must equal the original values with exactly these keys changed.
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


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block that starts at lines[start] (a key at `indent` spaces)."""
    for i in range(start + 1, len(lines)):
        text = lines[i]
        if text.strip() and not text.lstrip().startswith("#") and len(text) - len(text.lstrip()) <= indent:
            return i
    return len(lines)


def _find_key(lines: list[str], key: str, indent: int, start: int = 0, end: int | None = None) -> int:
    pattern = re.compile(rf"^{' ' * indent}{re.escape(key)}:(\s|$)")
    for i in range(start, len(lines) if end is None else end):
        if pattern.match(lines[i]):
            return i
    raise SystemExit(f"values.yaml: no `{key}:` at indent {indent} (the chart's layout changed: update this script)")


def _set_scalar(lines: list[str], index: int, value: str) -> None:
    """Replace the scalar value of `key: value  # comment` at lines[index], keeping the comment."""
    match = re.match(r"^(\s*[\w.-]+:)\s*(\"[^\"]*\"|'[^']*'|[^#\s]*)(\s*#.*)?$", lines[index])
    if not match:
        raise SystemExit(f"values.yaml line {index + 1} is not a plain `key: value`: {lines[index]!r}")
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
    parser.add_argument("--tag", required=True, help="image tag of the release, e.g. 1.2.3")
    parser.add_argument("--digest", action="append", default=[], metavar="SERVICE=sha256:...")
    args = parser.parse_args(argv)
    if args.registry != args.registry.lower() or not re.match(r"^[a-z0-9.-]+(/[a-z0-9._-]+)*$", args.registry):
        raise SystemExit(f"--registry {args.registry!r}: must be a lower-case registry/path")
    digests = parse_digests(args.digest)

    path = args.chart / "values.yaml"
    text = path.read_text()
    new = pin(text, args.registry, args.tag, digests)
    if yaml.safe_load(new) != expected(yaml.safe_load(text), args.registry, args.tag, digests):
        raise SystemExit("values.yaml: the edit changed more than the release keys (the layout changed?)")
    path.write_text(new)
    print(f"{path}: images {args.registry}/faceanalysis-<service>:{args.tag}"
          + (f", digests for {', '.join(sorted(digests))}" if digests else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
