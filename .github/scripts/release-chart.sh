#!/usr/bin/env bash
# Package the umbrella chart for the release and publish it:
#   1. pin it to this release with set_chart_release.py: version X.Y.Z in the Chart.yaml of the
#      umbrella and of every subchart (and in their dependencies), appVersion X.Y.Z (no "v", the
#      images' tag) in the umbrella's and the four services' (redis's stays the Redis version),
#      and its default images (global.image.registry/tag, each service's image.digest from the
#      images job);
#   2. helm lint, helm package (version and appVersion from those Chart.yaml files);
#   3. helm push to oci://ghcr.io/<owner>/charts (-> ghcr.io/<owner>/charts/faceanalysis:X.Y.Z);
#   4. cosign sign the pushed chart by digest, keyless, and verify it.
# Env: REGISTRY (ghcr.io/<owner>), VERSION (X.Y.Z), GHCR_USER, GHCR_TOKEN; digests/<service> files.
set -euo pipefail

REGISTRY="${REGISTRY:?}"
VERSION="${VERSION:?}"
services=(image-input face-landmark face-attributes data-storage)

python -m pip install --quiet "pyyaml==6.0.3"
pins=()
for service in "${services[@]}"; do
  pins+=(--digest "$service=$(<"digests/$service")")
done
python .github/scripts/set_chart_release.py charts/faceanalysis --registry "$REGISTRY" --tag "$VERSION" "${pins[@]}"

helm lint charts/faceanalysis
mkdir -p dist
# No --version/--app-version: they would reach only the umbrella's Chart.yaml, and the subcharts'
# labels and image tags read their own. The archive name below checks the version took.
helm package charts/faceanalysis --destination dist
helm show chart "dist/faceanalysis-$VERSION.tgz"

printf '%s' "${GHCR_TOKEN:?}" | helm registry login ghcr.io --username "${GHCR_USER:?}" --password-stdin
helm push "dist/faceanalysis-$VERSION.tgz" "oci://$REGISTRY/charts" 2>&1 | tee dist/push.txt
digest="$(grep -o 'sha256:[0-9a-f]\{64\}' dist/push.txt | head -n 1)"
if [[ -z "$digest" ]]; then
  echo "helm push printed no digest" >&2
  exit 1
fi

chart="$REGISTRY/charts/faceanalysis"
bash .github/scripts/cosign-sign.sh "$chart@$digest"
echo "published and signed oci://$chart:$VERSION ($digest)"
