# syntax=docker/dockerfile:1
# image-input: the public gRPC API (faceanalysis.v1.FaceAnalysis). No ML stack.
# Build from the repository root:  docker build -f docker/image-input.Dockerfile -t faceanalysis-image-input .

# ---- builder: a virtual environment with the package and this service's extra only ----
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/venv/bin/pip install --no-cache-dir ".[image-input]"
# This service needs no model files (faceanalysis models list), so there is nothing to bake.

# ---- runtime: the base image plus the venv; no compilers, no pip cache, no sources ----
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="faceanalysis-image-input" \
      org.opencontainers.image.description="faceanalysis image-input: public gRPC API, validates uploads and orchestrates the pipeline" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
# gRPC, Prometheus metrics
EXPOSE 50050 9150 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["faceanalysis", "health", "--target", "localhost:50050", "--service", "faceanalysis.v1.FaceAnalysis"]
ENTRYPOINT ["faceanalysis"]
CMD ["serve", "image-input"]
