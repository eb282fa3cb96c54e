# syntax=docker/dockerfile:1
# data-storage: results in Redis (TTL, indexes) and one archived JSON file per analysis.
# Build from the repository root:  docker build -f docker/data-storage.Dockerfile -t faceanalysis-data-storage .

# ---- builder: a virtual environment with the package and this service's extra only ----
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# /var/lib/faceanalysis/archive: one JSON file per analysis (a volume, owned by the runtime user).
RUN python -m venv /opt/venv \
 && mkdir -p /var/lib/faceanalysis/archive
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/venv/bin/pip install --no-cache-dir ".[data-storage]"
# This service needs no model files (faceanalysis models list), so there is nothing to bake.

# ---- runtime: the base image plus the venv; no compilers, no pip cache, no sources ----
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="faceanalysis-data-storage" \
      org.opencontainers.image.description="faceanalysis data-storage: stores results in Redis and archives them as JSON" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FACEANALYSIS_ARCHIVE_DIR=/var/lib/faceanalysis/archive
COPY --from=builder /opt/venv /opt/venv
# One JSON file per analysis. Mount a volume here (a PVC in the chart): the root filesystem may be
# read-only. No VOLUME instruction: an anonymous volume would silently hold (and lose) the archive.
COPY --from=builder --chown=10001:10001 /var/lib/faceanalysis/archive /var/lib/faceanalysis/archive
USER 10001:10001
WORKDIR /tmp
# gRPC, Prometheus metrics
EXPOSE 50053 9153
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["faceanalysis", "health", "--target", "localhost:50053", "--service", "faceanalysis.v1.DataStorage"]
ENTRYPOINT ["faceanalysis"]
CMD ["serve", "data-storage"]
