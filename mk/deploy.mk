# Kubernetes: kind cluster, Helm install, skaffold inner loop, rendered manifests. Included by
# the top-level Makefile; docs/deploy.md walks through them.
#
#   make kind-up       kind cluster (k8s/kind-cluster.yaml) with Envoy Gateway on localhost:443
#   make kind-cert-manager   cert-manager in the kind cluster (for global.tls or a cert-manager edge)
#   make kind-ingress-nginx  ingress-nginx instead, for the Ingress alternative (localhost:8443)
#   make deploy        helm upgrade --install charts/faceanalysis (VALUES=k8s/values-kind.yaml)
#   make undeploy      helm uninstall (the Redis Secret and volumes are kept)
#   make dev           skaffold dev: build the four images and redeploy on change
#   make manifests     regenerate k8s/rendered/faceanalysis.yaml (tests fail when it is stale)
#   make chart-readme  regenerate the charts' README parameter tables (from the `## @param` lines of
#                      their values.yaml) and the subcharts' values.schema.json (tests fail when stale)
#   make deploy-check  the offline chart/manifest checks (tests/deploy)
#   make tools         checkov in its own virtualenv (.venv-tools)
#
# kind-up, deploy, undeploy and dev need kind/helm/kubectl/skaffold on PATH and a cluster;
# manifests, deploy-check and tools need only the project venv.

VENV ?= .venv
PY ?= $(VENV)/bin/python
TOOLS_VENV ?= .venv-tools
CHECKOV_VERSION ?= 3.3.30
KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
SKAFFOLD ?= skaffold
KIND_CLUSTER ?= faceanalysis
RELEASE ?= faceanalysis
NAMESPACE ?= faceanalysis
VALUES ?= k8s/values-kind.yaml
HELM_FLAGS ?=
# Envoy Gateway (pinned): its Helm chart installs the Gateway API CRDs (standard channel) too.
ENVOY_GATEWAY_VERSION ?= v1.9.2
ENVOY_GATEWAY_CHART ?= oci://docker.io/envoyproxy/gateway-helm
# ingress-nginx's manifest for kind (pinned release), for the Ingress alternative only.
INGRESS_NGINX_KIND ?= https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.0/deploy/static/provider/kind/deploy.yaml

.PHONY: kind-up kind-down kind-cert-manager kind-ingress-nginx deploy undeploy helm-test dev manifests chart-readme deploy-check tools

kind-up:  ## create the kind cluster with Envoy Gateway (GatewayClass eg) on localhost:443
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --config k8s/kind-cluster.yaml
	$(HELM) upgrade --install eg $(ENVOY_GATEWAY_CHART) --version $(ENVOY_GATEWAY_VERSION) \
	  --kube-context kind-$(KIND_CLUSTER) -n envoy-gateway-system --create-namespace --wait --timeout 5m
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f k8s/envoy-gateway-kind.yaml

kind-cert-manager:  ## cert-manager in the kind cluster (global.tls, or a Gateway certificate from cert-manager)
	$(HELM) repo add jetstack https://charts.jetstack.io --force-update
	$(HELM) upgrade --install cert-manager jetstack/cert-manager --kube-context kind-$(KIND_CLUSTER) \
	  -n cert-manager --create-namespace --set crds.enabled=true --wait --timeout 5m

kind-ingress-nginx:  ## ingress-nginx in the kind cluster (the Ingress alternative, on localhost:8443)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f $(INGRESS_NGINX_KIND)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n ingress-nginx wait --for=condition=Ready pod \
	  -l app.kubernetes.io/component=controller --timeout=180s
	# No annotation reaches client_body_timeout: raise it controller-wide (docs/deploy.md).
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n ingress-nginx patch configmap ingress-nginx-controller \
	  --type merge -p '{"data":{"client-body-timeout":"3600","worker-shutdown-timeout":"3600s"}}'

kind-down:  ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

deploy:  ## helm upgrade --install the chart with $(VALUES)
	$(HELM) upgrade --install $(RELEASE) charts/faceanalysis --namespace $(NAMESPACE) --create-namespace \
	  --values $(VALUES) --wait --timeout 15m $(HELM_FLAGS)

helm-test:  ## run the chart's `helm test` (API health + one analysis)
	$(HELM) test $(RELEASE) --namespace $(NAMESPACE) --logs

undeploy:  ## helm uninstall (keeps the Redis Secret and PVCs)
	$(HELM) uninstall $(RELEASE) --namespace $(NAMESPACE)

dev:  ## skaffold dev on kind (or minikube: SKAFFOLD_PROFILE=minikube)
	$(SKAFFOLD) dev $(if $(SKAFFOLD_PROFILE),--profile $(SKAFFOLD_PROFILE))

manifests:  ## regenerate k8s/rendered/faceanalysis.yaml from the chart
	$(PY) k8s/render.py

chart-readme: tools/npm/node_modules/.package-lock.json  ## regenerate the charts' README tables (readme-generator-for-helm) and subchart schemas
	$(PY) k8s/chart_docs.py

deploy-check: tools  ## offline chart, manifest, checkov, promtool and skaffold checks
	$(PY) -m pytest tests/deploy -q

tools: $(TOOLS_VENV)/bin/checkov  ## checkov in its own virtualenv

$(TOOLS_VENV)/bin/checkov:
	python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
