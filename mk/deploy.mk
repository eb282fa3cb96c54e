# Kubernetes: kind cluster, Helm install, skaffold inner loop, rendered manifests. Included by
# the top-level Makefile; docs/deploy.md walks through them.
#
#   make kind-up       kind cluster (k8s/kind-cluster.yaml) with ingress-nginx
#   make deploy        helm upgrade --install charts/faceanalysis (VALUES=k8s/values-kind.yaml)
#   make undeploy      helm uninstall (the Redis Secret and volumes are kept)
#   make dev           skaffold dev: build the four images and redeploy on change
#   make manifests     regenerate k8s/rendered/faceanalysis.yaml (tests fail when it is stale)
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
# ingress-nginx's manifest for kind (pinned release).
INGRESS_NGINX_KIND ?= https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.0/deploy/static/provider/kind/deploy.yaml

.PHONY: kind-up kind-down deploy undeploy helm-test dev manifests deploy-check tools

kind-up:  ## create the kind cluster with ingress-nginx on localhost:80/443
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --config k8s/kind-cluster.yaml
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f $(INGRESS_NGINX_KIND)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n ingress-nginx wait --for=condition=Ready pod \
	  -l app.kubernetes.io/component=controller --timeout=180s

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

deploy-check: tools  ## offline chart, manifest, checkov, promtool and skaffold checks
	$(PY) -m pytest tests/deploy -q

tools: $(TOOLS_VENV)/bin/checkov  ## checkov in its own virtualenv

$(TOOLS_VENV)/bin/checkov:
	python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
