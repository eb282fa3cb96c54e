"""Each service starts with only its own extra installed, as in its image: a module that a service
imports must not pull in a library that only another service's extra brings (images-test once
caught face-attributes importing Pillow through a shared module; this catches it in seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Import names of what each extra of pyproject.toml adds beyond the base dependencies.
EXTRA_MODULES = {
    "image-input": {"PIL", "aiohttp"},
    "face-landmark": {"cv2", "dlib", "PIL", "onnxruntime"},
    "face-attributes": {"deepface", "onnxruntime", "cv2", "werkzeug"},
    "data-storage": {"redis"},
}
EVERY_EXTRA = set().union(*EXTRA_MODULES.values())


@pytest.mark.parametrize("service", sorted(EXTRA_MODULES))
def test_service_builds_without_the_other_services_libraries(service):
    blocked = sorted(EVERY_EXTRA - EXTRA_MODULES[service])
    module = "faceanalysis." + service.replace("-", "_") + ".server"
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"import {module} as m\nfrom faceanalysis.runtime import config\nm.build(config.Settings())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{service} needs a library its image lacks:\n{done.stderr[-2000:]}"
