"""`faceanalysis models pull`: fetch model files into the models directory and verify them.

Sources, in order, for each file:
1. the mirror (FACEANALYSIS_MODEL_MIRROR): a directory or an http(s) URL holding files by
   name, optionally with
   - a SHA256SUMS file whose hashes take precedence over the manifest's for the files it
     provides (a mirror may carry re-exported files whose bytes differ from the official ones);
   - a `faceanalysis-models.json` (MIRROR_OVERRIDE_FILE) describing its files:
     `{"files": {"<file name>": {"sha256": "...", "description": "...", "preprocessing": {"face_margin": 0.4}}}}`.
     Its `sha256` is checked like SHA256SUMS; its `preprocessing` is merged over what the manifest
     gives for a file that came from this mirror (official, or a variant known by its hash).
2. an installed Python package that ships the file (dlib's predictor in face_recognition_models);
3. the official URLs.

A file is installed only when a hash vouches for it: the mirror's (for a file from the mirror),
else the manifest's official sha256 or one of its known variants. Bytes that contradict a hash
(the mirror's, or the official sha256 the manifest records) are a mismatch and always refused:
allowing unverified files does not override that. Where the manifest has no official sha256
(`sha256: null`, e.g. DeepFace's weights, whose bytes could not be hashed), bytes that are no
known variant cannot be verified: they are refused (before anything is downloaded when no hash
at all could vouch for the slot) unless unverified files are allowed (--allow-unverified,
FACEANALYSIS_ALLOW_UNVERIFIED_MODELS; the chart's global.models.allowUnverified, the images'
ALLOW_UNVERIFIED_MODELS build argument), in which case they are installed with a warning naming
their sha256 and get the official weights' preprocessing. Every file is written to a temporary
name, hashed, checked, then renamed into place, so an interrupted, refused or mismatching pull
never leaves a file (or half a file) where a service would load it.

Each pull records every installed file's sha256 in SHA256SUMS, and what it is and the
preprocessing its weights need in models.lock.json (models/provenance.py).
"""

from __future__ import annotations

import bz2
import importlib.util
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from faceanalysis.models import UNKNOWN, ModelFile, manifest
from faceanalysis.models.provenance import (
    LOCK_FILE,
    MIRROR,
    MIRROR_OVERRIDE_FILE,
    Provenance,
    identify,
    read_record,
    sha256_of,
    update_record,
)

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024

# How to let `models pull` and `models verify` accept a file no hash vouches for, everywhere they run.
ALLOW_UNVERIFIED_HOW = ("--allow-unverified (environment: FACEANALYSIS_ALLOW_UNVERIFIED_MODELS=1; Helm chart: "
                        "global.models.allowUnverified=true; image build: ALLOW_UNVERIFIED_MODELS=true)")


class PullError(Exception):
    pass


@dataclass
class Outcome:
    name: str
    path: Path
    source: str
    sha256: str
    verified: bool  # False only when unverified files were allowed and no hash covered this one
    skipped: bool = False
    provenance: Provenance | None = None


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "file://"))


class Mirror:
    def __init__(self, location: str):
        self.location = location.rstrip("/")
        self.sums: dict[str, str] = {}
        text = self._read_text(LOCK_FILE)
        if text is not None:
            self.sums = parse_sums(text)
        self.overrides = self._read_overrides()

    def _read_overrides(self) -> dict[str, dict]:
        text = self._read_text(MIRROR_OVERRIDE_FILE)
        if text is None:
            return {}
        where = f"{self.location}/{MIRROR_OVERRIDE_FILE}"
        try:
            files = json.loads(text)["files"]
        except (ValueError, KeyError, TypeError) as err:
            raise PullError(f"{where} is not valid: expected {{\"files\": {{\"<file name>\": {{...}}}}}} "
                            f"({err})") from None
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise PullError(f"{where} is not valid: each file's entry must be an object")
        for name, item in files.items():
            if "sha256" in item and not (isinstance(item["sha256"], str) and len(item["sha256"]) == 64):
                raise PullError(f"{where}: {name}: sha256 must be 64 hex digits")
            if not isinstance(item.get("preprocessing", {}), dict):
                raise PullError(f"{where}: {name}: preprocessing must be an object")
        return {name: dict(item, sha256=item["sha256"].lower()) if "sha256" in item else dict(item)
                for name, item in files.items()}

    def pins(self, name: str) -> dict[str, str]:
        """The hashes this mirror gives for `name`, by where they come from."""
        pins = {}
        if name in self.sums:
            pins[f"mirror {LOCK_FILE}"] = self.sums[name]
        if self.overrides.get(name, {}).get("sha256"):
            pins[f"mirror {MIRROR_OVERRIDE_FILE}"] = self.overrides[name]["sha256"]
        return pins

    def _read_text(self, name: str) -> str | None:
        if _is_url(self.location):
            try:
                with urllib.request.urlopen(f"{self.location}/{name}", timeout=30) as resp:
                    return resp.read().decode()
            except (urllib.error.URLError, OSError):
                return None
        path = Path(self.location) / name
        return path.read_text() if path.is_file() else None

    def source_for(self, name: str) -> str | None:
        if _is_url(self.location):
            return f"{self.location}/{name}"
        path = Path(self.location) / name
        return str(path) if path.is_file() else None


def _package_path(spec: str) -> Path | None:
    package, _, relative = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _copy_to(src, dest_fh, total: int | None, label: str, progress: bool) -> None:
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dest_fh.write(chunk)
            bar.update(len(chunk))


def _fetch(source: str, dest_fh, label: str, progress: bool) -> None:
    """Write the (decompressed) bytes of `source` to dest_fh."""
    if _is_url(source):
        with urllib.request.urlopen(source, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            stream = bz2.BZ2File(resp) if source.endswith(".bz2") else resp
            _copy_to(stream, dest_fh, None if source.endswith(".bz2") else total, label, progress)
    else:
        with open(source, "rb") as fh:
            _copy_to(fh, dest_fh, os.path.getsize(source), label, progress)


def _installed_sums(models_dir: Path) -> dict[str, str]:
    lock = models_dir / LOCK_FILE
    return parse_sums(lock.read_text()) if lock.is_file() else {}


def _write_lock(models_dir: Path, sums: dict[str, str]) -> None:
    lock = models_dir / LOCK_FILE
    tmp = lock.with_suffix(".tmp")
    tmp.write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
    tmp.replace(lock)


def check(entry: ModelFile, actual: str, pins: dict[str, str]) -> str | None:
    """What vouches for a file with sha256 `actual` in `entry`'s slot: the mirror's pins (`pins`,
    for a file from that mirror) if it has any, else the manifest's hashes. None: nothing can
    verify these bytes (the manifest records no official sha256 and they are no known variant):
    the caller refuses them unless unverified files are allowed. PullError on a mismatch: bytes
    that contradict a mirror's pin, or the official sha256 the manifest records, whatever is
    allowed."""
    if pins:
        wrong = {where: h for where, h in pins.items() if h != actual}
        if wrong:
            raise PullError(f"sha256 mismatch: got {actual}, expected "
                            + ", ".join(f"{h} ({where})" for where, h in wrong.items()))
        return " and ".join(pins)
    if actual in entry.known_hashes:
        return "manifest sha256" if actual == entry.sha256 else "manifest variant"
    if entry.sha256:
        raise PullError(f"sha256 mismatch: got {actual}, expected "
                        + " or ".join(sorted(entry.known_hashes))
                        + (" (manifest: official file and known variants)" if entry.variants
                           else " (manifest: official file)"))
    return None


def describe(entry: ModelFile, rel: str, actual: str, verified_by: str | None, source: str,
             override: dict | None) -> Provenance:
    """What the installed file is and the preprocessing it needs: the manifest's (official or
    variant), with a mirror override's merged over it for a file that came from that mirror."""
    found = identify(entry, rel, actual, verified_by=verified_by, source=source)
    if not override:
        return found
    preprocessing = {**found.preprocessing, **override.get("preprocessing", {})}
    identity = found.identity if found.identity != UNKNOWN else MIRROR
    return Provenance(path=rel, sha256=actual, identity=identity,
                      description=override.get("description") or found.description, preprocessing=preprocessing,
                      preprocessing_from=(f"mirror {MIRROR_OVERRIDE_FILE}" if override.get("preprocessing")
                                          else found.preprocessing_from),
                      verified_by=verified_by, source=source)


def _unverifiable(entry: ModelFile, mirror: Mirror | None, actual: str | None = None) -> str:
    why = entry.unverified_reason or "the manifest has no sha256 for it"
    got = ""
    if actual is not None:
        got = (f"got sha256 {actual}, which is no known variant "
               f"({', '.join(v.sha256 for v in entry.variants)}), and " if entry.variants
               else f"got sha256 {actual}, and ")
    return (f"{entry.name}: refused: no hash can verify it ({why}; {got}the mirror "
            f"{'has no SHA256SUMS or ' + MIRROR_OVERRIDE_FILE + ' entry for it' if mirror else 'is not set'}). "
            f"To install it anyway (with a warning naming its sha256), allow unverified files: "
            f"{ALLOW_UNVERIFIED_HOW}; or get it from a mirror whose SHA256SUMS lists it")


def _warn_unverified(entry: ModelFile, actual: str, source: str, kept: bool = False) -> None:
    logger.warning(
        "warning: %s %s UNVERIFIED (unverified files are allowed): sha256 %s from %s; no hash vouches for it (%s), "
        "and it gets the official weights' preprocessing. To pin it, list `%s  %s` in a mirror's %s and pull "
        "from that mirror", entry.name, "kept" if kept else "installed", actual, source,
        entry.unverified_reason or "the manifest has no sha256 for it", actual, entry.name, LOCK_FILE)


def pull_file(entry: ModelFile, models_dir: Path, mirror: Mirror | None, *, progress: bool = True,
              force: bool = False, allow_unverified: bool = False) -> Outcome:
    dest = entry.location(models_dir)
    rel = entry.path
    in_mirror = mirror is not None and mirror.source_for(entry.name) is not None
    mirror_pins = mirror.pins(entry.name) if in_mirror else {}
    override = mirror.overrides.get(entry.name) if in_mirror else None

    if dest.is_file() and not force:
        actual = sha256_of(dest)
        rec = read_record(models_dir).get(rel)
        recorded = rec is not None and rec["sha256"] == actual
        try:
            verified_by = check(entry, actual, mirror_pins)
        except PullError:
            verified_by, keep, mismatched = None, False, True  # contradicts the mirror or the manifest: fetch again
        else:
            keep, mismatched = verified_by is not None, False
        if not keep and not mirror_pins and recorded and (
                rec.get("verified_by") or (allow_unverified and not mismatched)):
            # Verified when it was pulled (by a mirror's hash), or allowed unverified again now (never
            # a file that contradicts the official sha256 the manifest records).
            keep, verified_by = True, rec.get("verified_by")
            if verified_by is None:
                _warn_unverified(entry, actual, rec.get("source", "already present"), kept=True)
        if keep:
            if recorded and override is None and rec.get("preprocessing_from", "").startswith(MIRROR):
                found = Provenance.from_record(rel, rec)  # what the mirror it came from said about it
            else:
                found = describe(entry, rel, actual, verified_by,
                                 rec.get("source", "already present") if recorded else "already present", override)
            return Outcome(entry.name, dest, "already present", actual, verified_by is not None, skipped=True,
                           provenance=found)

    if not allow_unverified and not entry.known_hashes and not mirror_pins:
        raise PullError(_unverifiable(entry, mirror))

    sources: list[str] = []
    if in_mirror:
        sources.append(mirror.source_for(entry.name))
    if entry.package and (pkg := _package_path(entry.package)):
        sources.append(str(pkg))
    sources.extend(entry.urls)
    if not sources:
        raise PullError(f"{entry.name}: no source has it (mirror: {mirror.location if mirror else 'none'})")

    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in sources:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.name}.", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                _fetch(source, fh, entry.name, progress)
            actual = sha256_of(tmp)
            # A mirror's SHA256SUMS (and override file) govern only the files that came from that mirror.
            from_mirror = in_mirror and source == mirror.source_for(entry.name)
            verified_by = check(entry, actual, mirror_pins if from_mirror else {})
            if verified_by is None and not allow_unverified:
                raise PullError(_unverifiable(entry, mirror, actual))
            tmp.chmod(0o644)
            tmp.replace(dest)
            if verified_by is None:
                _warn_unverified(entry, actual, source)
            found = describe(entry, rel, actual, verified_by, source, override if from_mirror else None)
            return Outcome(entry.name, dest, source, actual, verified_by is not None, provenance=found)
        except (PullError, urllib.error.URLError, OSError, EOFError) as err:
            errors.append(f"{source}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise PullError(f"could not get {entry.name}:\n    " + "\n    ".join(errors))


def pull(models_dir: Path, *, service: str | None = None, mirror_location: str | None = None,
         progress: bool = True, force: bool = False, allow_unverified: bool = False) -> list[Outcome]:
    """Pull every model file (or one service's) into models_dir; raises PullError on failure."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    mirror = Mirror(mirror_location) if mirror_location else None
    if mirror and not _is_url(mirror.location) and not Path(mirror.location).is_dir():
        raise PullError(f"model mirror {mirror.location} is not a directory or an http(s) URL")
    entries = manifest().for_service(service)
    outcomes = []
    failures = []
    for entry in tqdm(entries, desc="models", unit="file", disable=not progress):
        try:
            outcomes.append(pull_file(entry, models_dir, mirror, progress=progress, force=force,
                                      allow_unverified=allow_unverified))
        except PullError as err:
            failures.append(str(err))
    sums = _installed_sums(models_dir)
    sums.update({o.path.relative_to(models_dir).as_posix(): o.sha256 for o in outcomes})
    _write_lock(models_dir, sums)
    update_record(models_dir, [o.provenance for o in outcomes if o.provenance is not None])
    if failures:
        raise PullError("\n".join(failures))
    return outcomes


