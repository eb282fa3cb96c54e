#!/usr/bin/env bash
# The public API through the edge, as README.md shows it: reflection and health need no key,
# FaceAnalysis refuses a call without one, and a multi-MB photo goes through the whole pipeline.
set -euo pipefail

E2E_DIR="${E2E_DIR:-$PWD/.e2e}"
EDGE="${EDGE:-localhost:443}"
AUTHORITY="${AUTHORITY:-faceanalysis.local}"
edge=(grpcurl -insecure -authority "$AUTHORITY")
health='{"service": "faceanalysis.v1.FaceAnalysis"}'

# The Gateway's Envoy may need a moment after the route is accepted.
deadline=$((SECONDS + 180))
until "${edge[@]}" -d "$health" "$EDGE" grpc.health.v1.Health/Check; do
  if ((SECONDS > deadline)); then
    echo "the edge did not answer health checks within 180 s" >&2
    exit 1
  fi
  sleep 5
done
"${edge[@]}" "$EDGE" list

# No API key: UNAUTHENTICATED, and nothing reaches the pipeline.
if "${edge[@]}" -d '{"page_size": 1}' "$EDGE" faceanalysis.v1.FaceAnalysis/ListAnalyses 2>"$E2E_DIR/nokey.txt"; then
  echo "a call without an API key was answered" >&2
  exit 1
fi
grep -q Unauthenticated "$E2E_DIR/nokey.txt"

ls -l "$E2E_DIR/photo.jpg"
bash .github/scripts/e2e-analyze.sh
