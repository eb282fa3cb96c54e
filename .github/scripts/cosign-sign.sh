#!/usr/bin/env bash
# Sign one pushed artifact by digest, keyless (a Fulcio certificate for this workflow's OIDC
# identity, an entry in Rekor), then verify the signature as a user would: the identity README.md
# tells users to check is this workflow file at this tag. The one place both release jobs sign.
# Usage: cosign-sign.sh REGISTRY/NAME@sha256:...
set -euo pipefail

ref="${1:?usage: cosign-sign.sh REGISTRY/NAME@sha256:...}"
cosign sign --yes "$ref"
identity="${GITHUB_SERVER_URL:?}/${GITHUB_REPOSITORY:?}/.github/workflows/release.yaml@${GITHUB_REF:?}"
cosign verify "$ref" \
  --certificate-oidc-issuer https://token.actions.githubusercontent.com \
  --certificate-identity "$identity" \
  >/dev/null
