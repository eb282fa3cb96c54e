#!/usr/bin/env bash
# Everything needed to debug a failed e2e run, into one folder for upload: every pod's logs
# (all containers, and the previous run of restarted ones), describe of every pod, events,
# the chart's objects, Helm's view, and kind's node logs. Never fails: it runs after a failure.
set -uo pipefail

out="${1:-e2e-logs}"
KIND_CLUSTER="${KIND_CLUSTER:-faceanalysis}"
mkdir -p "$out/pods"

kubectl get pods --all-namespaces -o wide >"$out/pods.txt" 2>&1
for kind in all gatewayclass gateway grpcroute httproute networkpolicy pvc; do
  kubectl get "$kind" --all-namespaces -o wide >>"$out/objects.txt" 2>&1
done
kubectl get events --all-namespaces --sort-by=.lastTimestamp >"$out/events.txt" 2>&1
kubectl describe pods --all-namespaces >"$out/describe-pods.txt" 2>&1
for kind in gateway grpcroute httproute; do
  kubectl describe "$kind" --all-namespaces >>"$out/describe-edge.txt" 2>&1
done
helm list --all-namespaces >"$out/helm.txt" 2>&1

while read -r namespace pod; do
  kubectl -n "$namespace" logs "$pod" --all-containers --prefix --timestamps >"$out/pods/$namespace.$pod.log" 2>&1
  kubectl -n "$namespace" logs "$pod" --all-containers --prefix --timestamps --previous \
    >"$out/pods/$namespace.$pod.previous.log" 2>/dev/null || rm -f "$out/pods/$namespace.$pod.previous.log"
done < <(kubectl get pods --all-namespaces \
  -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}')

kind export logs "$out/kind" --name "$KIND_CLUSTER" >/dev/null 2>&1
exit 0
