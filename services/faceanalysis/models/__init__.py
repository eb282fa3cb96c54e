"""Model files: what exists (manifest.json), where it lives, how to get it, and what each known
file's weights need (its preprocessing).

A manifest entry names one slot (a file name and path), the official file's sha256 (or why it is
unknown: `unverified_reason`), the preprocessing the official weights want, and `variants`: other
files known to fill the same slot (keyed by sha256: the stand-ins of ../shared/models, a
re-exported detector), each with its own description and preprocessing merged over the official
one. `identify(sha256)` says which of these a file is. What was installed, and with which
preprocessing, is recorded in the models directory by `models pull` (models/provenance.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

OFFICIAL, VARIANT, UNKNOWN = "official", "variant", "unknown"


@dataclass(frozen=True)
class Variant:
    sha256: str
    description: str
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """What a file with a given sha256 is, for one manifest entry."""
    kind: str  # OFFICIAL, VARIANT or UNKNOWN
    description: str
    preprocessing: dict[str, Any]

    @property
    def known(self) -> bool:
        return self.kind != UNKNOWN


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
    description: str = ""
    unverified_reason: str | None = None  # why sha256 is null
    preprocessing: dict[str, Any] = field(default_factory=dict)  # what the official weights need
    variants: tuple[Variant, ...] = ()

    def location(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.path

    @property
    def known_hashes(self) -> frozenset[str]:
        """Every sha256 the manifest vouches for in this slot: the official file's and its variants'."""
        return frozenset(h for h in (self.sha256, *(v.sha256 for v in self.variants)) if h)

    def identify(self, sha256: str) -> Identity:
        """The official file, a known variant (with its preprocessing merged over the official
        one), or unknown (the official preprocessing, which may not suit it)."""
        sha256 = sha256.lower()
        if self.sha256 and sha256 == self.sha256:
            return Identity(OFFICIAL, self.description or "official file", dict(self.preprocessing))
        for variant in self.variants:
            if sha256 == variant.sha256:
                return Identity(VARIANT, variant.description, {**self.preprocessing, **variant.preprocessing})
        return Identity(UNKNOWN, "not a file the manifest knows", dict(self.preprocessing))


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


def _entry(f: dict) -> ModelFile:
    sha256 = (f.get("sha256") or "").lower() or None
    if sha256 is None and not f.get("unverified_reason"):
        raise ValueError(f"manifest entry {f['name']} has no sha256 and no unverified_reason saying why")
    return ModelFile(
        name=f["name"], path=f["path"], task=f["task"], services=tuple(f["services"]), license=f["license"],
        sha256=sha256, urls=tuple(f.get("urls", ())), package=f.get("package"),
        description=f.get("description", ""), unverified_reason=f.get("unverified_reason"),
        preprocessing=dict(f.get("preprocessing", {})),
        variants=tuple(Variant(v["sha256"].lower(), v.get("description", ""), dict(v.get("preprocessing", {})))
                       for v in f.get("variants", ())),
    )


def manifest() -> Manifest:
    raw = json.loads(resources.files(__package__).joinpath("manifest.json").read_text())
    return Manifest(tuple(_entry(f) for f in raw["files"]))


@dataclass(frozen=True)
class ServedModel:
    """A model as a result names it (faceanalysis.v1.ModelInfo): which file, its sha256, and the
    settings and preprocessing that shape what it answers."""
    name: str
    task: str
    file: str
    sha256: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


def parameter(value: Any) -> str:
    """A setting as ModelInfo.parameters carries it: numbers without trailing zeros (0.4, 640),
    lists as compact JSON ([224,224])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


class ModelMissing(Exception):
    pass


class UnsupportedPreprocessing(ModelMissing):
    """A model file's recorded preprocessing asks for something the service does not do."""


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
