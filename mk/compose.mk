# Docker Compose stack (docker/compose.yaml). Included by the top-level Makefile.
#
#   make compose-up                                  the four services + Redis
#   make compose-up COMPOSE_PROFILES=observability   ... plus Prometheus and Grafana
#   make compose-down                                stop everything, keep the volumes
#   make compose-down COMPOSE_DOWN_FLAGS=--volumes   ... and delete models, results and Redis data

COMPOSE ?= docker compose
COMPOSE_YAML ?= docker/compose.yaml
COMPOSE_ENV_FILE ?= docker/.env
# Comma-separated, as Compose itself reads COMPOSE_PROFILES.
COMPOSE_PROFILES ?=
# Every profile in COMPOSE_YAML: `down` only removes services of profiles it is told about.
COMPOSE_ALL_PROFILES ?= observability
COMPOSE_UP_FLAGS ?= --build --detach --wait
COMPOSE_DOWN_FLAGS ?=

COMPOSE_CMD = $(COMPOSE) --file $(COMPOSE_YAML) --env-file $(COMPOSE_ENV_FILE)

.PHONY: compose-env compose-config compose-up compose-down compose-ps compose-logs

compose-env:
	@test -f $(COMPOSE_ENV_FILE) || { \
	  echo "$(COMPOSE_ENV_FILE) is missing: cp docker/.env.example $(COMPOSE_ENV_FILE) and set the passwords in it" >&2; \
	  exit 1; }

compose-config: compose-env  ## print the resolved Compose model (fails on missing variables)
	COMPOSE_PROFILES=$(COMPOSE_PROFILES) $(COMPOSE_CMD) config --quiet

compose-up: compose-env  ## build the images and start the stack; waits until it is healthy
	COMPOSE_PROFILES=$(COMPOSE_PROFILES) $(COMPOSE_CMD) up $(COMPOSE_UP_FLAGS)

compose-down: compose-env  ## stop and remove the stack's containers and networks (volumes stay)
	COMPOSE_PROFILES=$(COMPOSE_ALL_PROFILES) $(COMPOSE_CMD) down --remove-orphans $(COMPOSE_DOWN_FLAGS)

compose-ps: compose-env
	COMPOSE_PROFILES=$(COMPOSE_ALL_PROFILES) $(COMPOSE_CMD) ps --all

compose-logs: compose-env
	COMPOSE_PROFILES=$(COMPOSE_ALL_PROFILES) $(COMPOSE_CMD) logs --follow
