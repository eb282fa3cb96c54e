#!/usr/bin/env bash
# face-attributes at 3 replicas (autoscaling off, replicaCount 3, through the chart), then calls
# through the edge until every pod's own /metrics shows it served PredictAttributes calls.
# image-input dials face-attributes through the headless Service with round_robin; servers cap
# connection age (global.config.max_connection_age_seconds, 120 s), so image-input re-resolves
# DNS and reaches the new pods without a restart: the deadline leaves room for that.
set -euo pipefail

RELEASE="${RELEASE:?}"
NAMESPACE="${NAMESPACE:?}"
REPLICAS="${REPLICAS:-3}"
DEADLINE_SECONDS="${DEADLINE_SECONDS:-600}"
selector="app.kubernetes.io/name=face-attributes,app.kubernetes.io/instance=$RELEASE"

bash .github/scripts/e2e-deploy.sh \
  --set face-attributes.autoscaling.enabled=false --set "face-attributes.replicaCount=$REPLICAS"
kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE-face-attributes" --timeout=15m
mapfile -t pods < <(kubectl -n "$NAMESPACE" get pods -l "$selector" --field-selector=status.phase=Running \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
if ((${#pods[@]} != REPLICAS)); then
  echo "expected $REPLICAS running face-attributes pods, found ${#pods[@]}: ${pods[*]}" >&2
  exit 1
fi

# PredictAttributes calls this pod answered OK, from its own Prometheus endpoint (read inside the
# pod: the chart's NetworkPolicy admits only Prometheus to the metrics port).
served() {
  kubectl -n "$NAMESPACE" exec "$1" -c face-attributes -- python -c '
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9152/metrics", timeout=10).read().decode()
print(int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("faceanalysis_grpc_requests_total{")
              and "method=\"PredictAttributes\"" in line and "code=\"OK\"" in line)))'
}

declare -A before
for pod in "${pods[@]}"; do
  before[$pod]="$(served "$pod")"
done

calls=0
deadline=$((SECONDS + DEADLINE_SECONDS))
while :; do
  bash .github/scripts/e2e-analyze.sh >/dev/null
  calls=$((calls + 1))
  if ((calls % 5 == 0)); then
    waiting=0
    report=""
    for pod in "${pods[@]}"; do
      now="$(served "$pod")"
      report+=" $pod=$((now - before[$pod]))"
      ((now > before[$pod])) || waiting=$((waiting + 1))
    done
    echo "after $calls calls, PredictAttributes per pod:$report"
    if ((waiting == 0)); then
      echo "every face-attributes pod served calls"
      exit 0
    fi
  fi
  if ((SECONDS > deadline)); then
    echo "after $calls calls in $DEADLINE_SECONDS s, $waiting pod(s) had served nothing" >&2
    exit 1
  fi
done
