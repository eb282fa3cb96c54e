# Container images (docker/*.Dockerfile). Included by the top-level Makefile.
#
#   make images        build the four images with a Docker engine (docker build; needs a daemon)
#   make images-test   build and run them without any daemon: buildah --isolation chroot on a
#                      local Debian rootfs base, then health, uid, read-only root and one real
#                      photo through the pipeline (needs root, buildah, debootstrap; CI runs it)
#
# Variables: IMAGE_PREFIX (e.g. ghcr.io/you/), IMAGE_TAG, BAKE_MODELS, MODEL_MIRROR, ALLOW_UNVERIFIED_MODELS (images);
#            IMAGES_TEST_FLAGS, e.g. "--services image-input data-storage", "--bake face-landmark",
#            "--no-run", "--keep" (images-test).

VENV ?= .venv
PY ?= $(VENV)/bin/python
DOCKER ?= docker
IMAGE_SERVICES ?= image-input face-landmark face-attributes data-storage
# Images are named faceanalysis-<service>, as the chart, skaffold.yaml and compose expect.
IMAGE_PREFIX ?=
IMAGE_TAG ?= $(shell $(PY) -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])' 2>/dev/null || echo dev)
BAKE_MODELS ?= false
MODEL_MIRROR ?=
# true: a baked image may carry model files no sha256 vouches for (DeepFace's official weights)
ALLOW_UNVERIFIED_MODELS ?= false
IMAGES_TEST_MIRROR ?= ../shared/models
IMAGES_TEST_PHOTO ?= ../shared/images/face_recognition/obama.jpg
IMAGES_TEST_FLAGS ?=

.PHONY: images $(addprefix image-,$(IMAGE_SERVICES)) images-test

images: $(addprefix image-,$(IMAGE_SERVICES))  ## build all four images (needs a Docker engine)

$(addprefix image-,$(IMAGE_SERVICES)): image-%:
	$(DOCKER) build --file docker/$*.Dockerfile \
	  --build-arg BAKE_MODELS=$(BAKE_MODELS) --build-arg MODEL_MIRROR=$(MODEL_MIRROR) \
	  --build-arg ALLOW_UNVERIFIED_MODELS=$(ALLOW_UNVERIFIED_MODELS) \
	  --tag $(IMAGE_PREFIX)faceanalysis-$*:$(IMAGE_TAG) .

images-test:  ## build and run the images daemonless with buildah (root, buildah, debootstrap)
	$(PY) docker/tools/images_test.py \
	  --mirror $(IMAGES_TEST_MIRROR) --photo $(IMAGES_TEST_PHOTO) $(IMAGES_TEST_FLAGS)
