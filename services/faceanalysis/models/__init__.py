"""Model files: what exists (manifest.json), where it lives, and how to get it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: str  # relative to the models directory
    task: str
    services: tuple[str, ...]
    license: str
    sha256: str | None
    urls: tuple[str, ...] = ()
    package: str | None = None  # "pkg:relative/path" inside an installed Python package

    def location(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.path


@dataclass(frozen=True)
class Manifest:
    files: tuple[ModelFile, ...] = field(default_factory=tuple)

    def get(self, name: str) -> ModelFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    def for_service(self, service: str | None) -> list[ModelFile]:
        return [f for f in self.files if service is None or service in f.services]


def manifest() -> Manifest:
    raw = json.loads(resources.files(__package__).joinpath("manifest.json").read_text())
    return Manifest(
        tuple(
            ModelFile(
                name=f["name"], path=f["path"], task=f["task"], services=tuple(f["services"]),
                license=f["license"], sha256=f.get("sha256"), urls=tuple(f.get("urls", ())),
                package=f.get("package"),
            )
            for f in raw["files"]
        )
    )


class ModelMissing(Exception):
    pass


def locate(models_dir: Path, name: str) -> Path:
    """Path of an installed model file, or ModelMissing saying exactly how to get it."""
    entry = manifest().get(name)
    path = entry.location(models_dir)
    if not path.is_file():
        service = entry.services[0]
        raise ModelMissing(
            f"model file {entry.name} is missing: expected {path.resolve()}. "
            f"Run `faceanalysis models pull --only {service}` (set FACEANALYSIS_MODEL_MIRROR to a "
            f"directory or URL for air-gapped sites), or bake models into the image."
        )
    return path
