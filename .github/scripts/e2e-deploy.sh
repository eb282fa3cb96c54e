#!/usr/bin/env bash
# helm upgrade --install of the umbrella chart with k8s/values-kind.yaml and the images built
# by e2e-images.sh (`make deploy`: --wait, 15 minutes). Extra arguments go to helm as they are:
#   e2e-deploy.sh --set face-attributes.replicaCount=3
set -euo pipefail

IMAGE_TAG="${IMAGE_TAG:?}"
RELEASE="${RELEASE:?}"
NAMESPACE="${NAMESPACE:?}"

flags="--set global.image.tag=$IMAGE_TAG"
for arg in "$@"; do
  flags+=" $arg"
done
make deploy RELEASE="$RELEASE" NAMESPACE="$NAMESPACE" VALUES=k8s/values-kind.yaml HELM_FLAGS="$flags"
kubectl -n "$NAMESPACE" get pods -o wide
kubectl -n "$NAMESPACE" get gateway,grpcroute,httproute 2>/dev/null || true
