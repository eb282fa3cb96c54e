#!/usr/bin/env bash
# The edge docs/deploy.md names: Envoy Gateway (pinned in mk/deploy.mk) with the GatewayClass
# `eg` whose Envoy Service listens on node port 30443 (k8s/envoy-gateway-kind.yaml), which
# k8s/kind-cluster.yaml publishes as localhost:443. `make kind-up` does exactly that and skips
# the cluster creation (kind-action made it).
# k8s/values-kind.yaml also turns on the ServiceMonitor and PrometheusRule: their CRDs come from
# prometheus-operator at the release the schemas in ../shared/schemas were taken from, so the
# API server itself validates those objects.
set -euo pipefail

KIND_CLUSTER="${KIND_CLUSTER:?}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.93.0}"
repo="https://raw.githubusercontent.com/prometheus-operator/prometheus-operator"
crds="$repo/$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd"

make kind-up KIND_CLUSTER="$KIND_CLUSTER"
for crd in servicemonitors prometheusrules; do
  kubectl apply --server-side -f "$crds/monitoring.coreos.com_$crd.yaml"
done
kubectl wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com
kubectl wait --for=condition=Accepted --timeout=120s gatewayclass/eg
kubectl get gatewayclass eg
