"""Fixtures for the Docker Compose checks: the parsed compose file and the service registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_YAML = DOCKER_DIR / "compose.yaml"

try:
    import faceanalysis  # noqa: F401
except ImportError:  # not installed: import it from the checkout
    sys.path.insert(0, str(ROOT / "services"))


@pytest.fixture(scope="session")
def compose() -> dict:
    with COMPOSE_YAML.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="session")
def specs():
    from faceanalysis.runtime.services import SERVICES

    return SERVICES
