#!/usr/bin/env bash
# The ci workflow's one step: check the shared folder beside the repository, then run the
# project's own CI entry point (.ci/run) exactly as the project's CI machine does.
# Layout (both checked out by the workflow): $GITHUB_WORKSPACE/main and $GITHUB_WORKSPACE/shared.
set -euo pipefail

workspace="${GITHUB_WORKSPACE:?run from GitHub Actions}"
shared="$workspace/shared"

# What the tests read from ../shared (tests/support.py, tests/deploy, tests/compose, DESIGN.md).
for path in models/SHA256SUMS images/face_recognition images/dlib images/deepface images/misc \
            eval/utkface-dev schemas/skaffold-v4beta13.json schemas/compose-spec.json schemas/crds; do
  if [[ ! -e "$shared/$path" ]]; then
    echo "shared folder incomplete: $shared/$path is missing (see the comment at the top of ci.yaml)" >&2
    exit 1
  fi
done
# Every model file of the mirror must be the one its SHA256SUMS names.
(cd "$shared/models" && sha256sum --check --strict --quiet SHA256SUMS)

# pip's cache lives in the workspace so that actions/cache can save it (HOME differs in containers).
export PIP_CACHE_DIR="$workspace/pip-cache"
export CI=true
exec bash "$workspace/main/.ci/run"
