#!/usr/bin/env bash
# Build the four images as `make images` does (docker build of docker/<service>.Dockerfile, same
# build args; models come from init containers, not baked) and side-load them into kind.
set -euo pipefail

IMAGE_TAG="${IMAGE_TAG:?}"
KIND_CLUSTER="${KIND_CLUSTER:?}"
services=(image-input face-landmark face-attributes data-storage)

export DOCKER_BUILDKIT=1
make images IMAGE_TAG="$IMAGE_TAG"
for service in "${services[@]}"; do
  image="faceanalysis-$service:$IMAGE_TAG"
  docker image inspect --format '{{.Id}} {{.Size}}' "$image"
  kind load docker-image "$image" --name "$KIND_CLUSTER"
done
# The images now live in the kind node: drop Docker's copies to keep disk for the models.
for service in "${services[@]}"; do
  docker image rm "faceanalysis-$service:$IMAGE_TAG" >/dev/null
done
docker builder prune --all --force >/dev/null
df -h /
