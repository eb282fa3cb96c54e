#!/usr/bin/env bash
# The release's version from its tag (vX.Y.Z or vX.Y.Z-suffix), which must be pyproject.toml's
# version: the images carry that version (it is part of the result cache key), the chart gets it
# as its version. Writes to $GITHUB_OUTPUT: version (X.Y.Z), tag (vX.Y.Z), registry
# (ghcr.io/<owner>, lower case as ghcr.io wants it) and, with SERVICE set, image
# (<registry>/faceanalysis-<service>, the name the chart and compose expect).
set -euo pipefail

tag="${GITHUB_REF_NAME:?run from a tag push}"
if [[ ! "$tag" =~ ^v([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)$ ]]; then
  echo "tag $tag is not vMAJOR.MINOR.PATCH[-suffix]" >&2
  exit 1
fi
version="${BASH_REMATCH[1]}"
project="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
if [[ "$project" != "$version" ]]; then
  echo "tag $tag does not match pyproject.toml's version $project: bump it first" >&2
  exit 1
fi
owner="${GITHUB_REPOSITORY_OWNER:?}"
registry="ghcr.io/${owner,,}"
{
  echo "version=$version"
  echo "tag=$tag"
  echo "registry=$registry"
  if [[ -n "${SERVICE:-}" ]]; then
    echo "image=$registry/faceanalysis-$SERVICE"
  fi
} >>"${GITHUB_OUTPUT:?}"
echo "release $version to $registry"
