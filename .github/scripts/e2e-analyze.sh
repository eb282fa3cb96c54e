#!/usr/bin/env bash
# One AnalyzeImage call through the edge (Envoy Gateway on localhost:443, TLS with the chart's
# self-signed certificate, the route's host as :authority, the release's API key) with the
# multi-MB photo from e2e-tools.sh; fails unless the answer has exactly EXPECT_FACES faces.
# skip_cache: every call runs the whole pipeline, so face-attributes sees every one.
set -euo pipefail

E2E_DIR="${E2E_DIR:-$PWD/.e2e}"
RELEASE="${RELEASE:?}"
NAMESPACE="${NAMESPACE:?}"
EDGE="${EDGE:-localhost:443}"
AUTHORITY="${AUTHORITY:-faceanalysis.local}"
EXPECT_FACES="${EXPECT_FACES:-1}"

request="$E2E_DIR/request.json"
if [[ ! -s "$request" ]]; then
  # grpcurl -d @ reads stdin: a photo's base64 is far too long for one argument.
  { printf '{"image": "'; base64 -w0 "$E2E_DIR/photo.jpg"; printf '", "options": {"skip_cache": true}}'; } >"$request"
fi
key_file="$E2E_DIR/api-key"
if [[ ! -s "$key_file" ]]; then
  kubectl -n "$NAMESPACE" get secret "$RELEASE-image-input-api-keys" -o jsonpath='{.data.api-key}' |
    base64 -d >"$key_file"
fi
key="$(<"$key_file")"

result="$E2E_DIR/result.json"
grpcurl -insecure -authority "$AUTHORITY" -H "authorization: Bearer $key" -max-time 300 \
  -d @ "$EDGE" faceanalysis.v1.FaceAnalysis/AnalyzeImage <"$request" >"$result"
python - "$result" "$EXPECT_FACES" <<'PY'
import json
import sys

result = json.load(open(sys.argv[1]))["result"]
faces, image = result.get("faces", []), result["image"]
print(f"analysis {result['analysis_id']}: {image['width']}x{image['height']} {image.get('format')}, "
      f"{len(faces)} face(s)")
if len(faces) != int(sys.argv[2]):
    sys.exit(f"expected {sys.argv[2]} face(s)")
PY
