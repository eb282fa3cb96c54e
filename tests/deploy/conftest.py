from __future__ import annotations

import pytest

from .chart import VARIANTS, render


@pytest.fixture(scope="session")
def rendered_variants():
    """Every variant rendered once per session (rendering is in-process, ~0.2 s each)."""
    return {name: render(values) for name, values in VARIANTS.items()}


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def rendered(request, rendered_variants):
    return rendered_variants[request.param]


@pytest.fixture(scope="session")
def default_render(rendered_variants):
    return rendered_variants["default"]
