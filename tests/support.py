"""Paths and helpers shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEANALYSIS_SHARED", ROOT.parent / "shared"))
IMAGES = SHARED / "images"
MIRROR = Path(os.environ.get("FACEANALYSIS_MODEL_MIRROR", SHARED / "models")).resolve()
# The stand-in DeepFace models want a wide crop (see shared/models/README.md).
TEST_MARGIN = "0.4"


def image(relative: str) -> Path:
    path = IMAGES / relative
    if not path.is_file():
        pytest.fail(f"test photo {path} is missing: the shared folder must sit beside the repository")
    return path
