# syntax=docker/dockerfile:1
# image-input: the public gRPC API (faceanalysis.v1.FaceAnalysis). No ML stack.
# Build from the repository root:  docker build -f docker/image-input.Dockerfile -t faceanalysis/image-input .

# ---- builder: a virtual environment with the package and this service's extra only ----
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/venv/bin/pip install --no-cache-dir ".[image-input]"

# Models: baked in at build time (BAKE_MODELS=true), or provided at /models by an init container.
# MODEL_MIRROR is a directory or URL mirror (see `faceanalysis models pull --help`).
ARG BAKE_MODELS=false
ARG MODEL_MIRROR=
RUN mkdir -p /models \
 && if [ "$BAKE_MODELS" = "true" ]; then \
      FACEANALYSIS_MODELS_DIR=/models FACEANALYSIS_MODEL_MIRROR="$MODEL_MIRROR" \
        /opt/venv/bin/faceanalysis models pull --only image-input; \
    fi

# ---- runtime: the base image plus the venv; no compilers, no pip cache, no sources ----
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="faceanalysis-image-input" \
      org.opencontainers.image.description="faceanalysis image-input: public gRPC API, validates uploads and orchestrates the pipeline" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FACEANALYSIS_MODELS_DIR=/models
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=10001:10001 /models /models
USER 10001:10001
WORKDIR /tmp
# gRPC, Prometheus metrics
EXPOSE 50050 9150
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["faceanalysis", "health", "--target", "localhost:50050", "--service", "faceanalysis.v1.FaceAnalysis"]
ENTRYPOINT ["faceanalysis"]
CMD ["serve", "image-input"]
