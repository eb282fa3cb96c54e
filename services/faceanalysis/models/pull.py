"""`faceanalysis models pull`: fetch model files into the models directory and verify them.

Sources, in order, for each file:
1. the mirror (FACEANALYSIS_MODEL_MIRROR): a directory or an http(s) URL holding files by
   name, optionally with a SHA256SUMS file whose hashes take precedence over the manifest's
   (a mirror may carry re-exported files whose bytes differ from the official ones);
2. an installed Python package that ships the file (dlib's predictor in face_recognition_models);
3. the official URLs.
Every file is written to a temporary name, hashed, checked, then renamed into place, so an
interrupted or failed pull never leaves a half file where a service would load it.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from faceanalysis.models import ModelFile, manifest

LOCK_FILE = "SHA256SUMS"  # what is installed, written by every pull
CHUNK = 1024 * 1024


class PullError(Exception):
    pass


@dataclass
class Outcome:
    name: str
    path: Path
    source: str
    sha256: str
    verified: bool  # False when no hash was known (trust on first use)
    skipped: bool = False


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "file://"))


class Mirror:
    def __init__(self, location: str):
        self.location = location.rstrip("/")
        self.sums: dict[str, str] = {}
        text = self._read_text(LOCK_FILE)
        if text is not None:
            self.sums = parse_sums(text)

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


def pull_file(entry: ModelFile, models_dir: Path, mirror: Mirror | None, *, progress: bool = True,
              force: bool = False) -> Outcome:
    dest = entry.location(models_dir)
    installed = _installed_sums(models_dir)
    expected = (mirror.sums.get(entry.name) if mirror else None) or entry.sha256 or installed.get(entry.path)

    if dest.is_file() and not force:
        actual = sha256_of(dest)
        if expected is None or actual == expected:
            return Outcome(entry.name, dest, "already present", actual, expected is not None, skipped=True)

    sources: list[str] = []
    if mirror and (src := mirror.source_for(entry.name)):
        sources.append(src)
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
            # A mirror's SHA256SUMS governs only the files that came from that mirror.
            from_mirror = mirror is not None and source == mirror.source_for(entry.name)
            want = mirror.sums.get(entry.name) if from_mirror and entry.name in mirror.sums else None
            want = want or entry.sha256 or installed.get(entry.path)
            if want is not None and actual != want:
                raise PullError(f"sha256 mismatch from {source}: got {actual}, expected {want}")
            tmp.chmod(0o644)
            tmp.replace(dest)
            return Outcome(entry.name, dest, source, actual, want is not None)
        except (PullError, urllib.error.URLError, OSError, EOFError) as err:
            errors.append(f"{source}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise PullError(f"could not get {entry.name}:\n    " + "\n    ".join(errors))


def pull(models_dir: Path, *, service: str | None = None, mirror_location: str | None = None,
         progress: bool = True, force: bool = False) -> list[Outcome]:
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
            outcomes.append(pull_file(entry, models_dir, mirror, progress=progress, force=force))
        except PullError as err:
            failures.append(str(err))
    sums = _installed_sums(models_dir)
    sums.update({o.path.relative_to(models_dir).as_posix(): o.sha256 for o in outcomes})
    _write_lock(models_dir, sums)
    if failures:
        raise PullError("\n".join(failures))
    return outcomes


