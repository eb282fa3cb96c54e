#!/usr/bin/env bash
# Sign one pushed image by digest, keyless (Fulcio certificate for this workflow's OIDC identity,
# entry in Rekor), check the signature as a user would, and keep the digest for the chart job.
# Env: IMAGE (registry/name, no tag), DIGEST (sha256:...), SERVICE.
set -euo pipefail

IMAGE="${IMAGE:?}"
DIGEST="${DIGEST:?}"
SERVICE="${SERVICE:?}"
if [[ ! "$DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "no digest from the build: '$DIGEST'" >&2
  exit 1
fi

bash .github/scripts/cosign-sign.sh "$IMAGE@$DIGEST"
mkdir -p digests
printf '%s' "$DIGEST" >"digests/$SERVICE"
echo "signed $IMAGE@$DIGEST"
