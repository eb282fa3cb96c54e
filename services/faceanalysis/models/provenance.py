"""What a models directory holds: each installed file's sha256, what it is, and its preprocessing.

`faceanalysis models pull` writes two files into the models directory:

- `SHA256SUMS`: every installed file's sha256, in `sha256sum -c` format;
- `models.lock.json` (RECORD_FILE): per installed file (by its path in the models directory) its
  sha256, what it is (`official`, a known `variant`, described by the `mirror`, `unknown`, or an
  `int8` copy), a description, what verified it, where it came from, and the preprocessing its
  weights need (`face_margin`, `input_size`, `color_order`, `pixel_range`) with where that came
  from (the manifest, a manifest variant, the mirror's override file, the fp32 file of an int8
  copy). `faceanalysis models quantize` adds its int8 copies, which inherit the fp32 file's
  preprocessing.

Services call `resolve` once at load: it hashes the file and takes the record's entry when its
sha256 matches; otherwise (no record: a baked image, a hand-copied file; or a file changed since
the pull) it identifies the file by its hash in the manifest, then by the preprocessing
`models quantize` embeds in an int8 copy's ONNX metadata; a file nobody knows gets the official
preprocessing, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceanalysis.models import UNKNOWN, ModelFile

logger = logging.getLogger(__name__)

LOCK_FILE = "SHA256SUMS"
RECORD_FILE = "models.lock.json"
# A mirror's own description of the files it provides, beside its SHA256SUMS (models/pull.py).
MIRROR_OVERRIDE_FILE = "faceanalysis-models.json"
# Keys in an int8 copy's ONNX metadata (models/quantize.py).
METADATA_PREPROCESSING = "faceanalysis.preprocessing"
METADATA_SOURCE_SHA256 = "faceanalysis.quantized_from_sha256"
MIRROR, INT8 = "mirror", "int8"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Provenance:
    path: str  # relative to the models directory (posix), or absolute for a file outside it
    sha256: str
    identity: str  # official, variant, mirror, unknown, int8
    description: str
    preprocessing: dict[str, Any]
    preprocessing_from: str
    verified_by: str | None = None  # None: nothing vouched for these bytes
    source: str | None = None
    derived_from: dict[str, str] | None = None  # int8 copies: the fp32 file's path and sha256
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("path", "extra") and v is not None}
        out.update(self.extra)
        return out

    @classmethod
    def from_record(cls, path: str, rec: dict[str, Any]) -> Provenance:
        known = {"sha256", "identity", "description", "preprocessing", "preprocessing_from", "verified_by",
                 "source", "derived_from"}
        return cls(path=path, sha256=rec["sha256"], identity=rec.get("identity", UNKNOWN),
                   description=rec.get("description", ""), preprocessing=dict(rec.get("preprocessing", {})),
                   preprocessing_from=rec.get("preprocessing_from", RECORD_FILE),
                   verified_by=rec.get("verified_by"), source=rec.get("source"),
                   derived_from=rec.get("derived_from"), extra={k: v for k, v in rec.items() if k not in known})

    @property
    def face_margin(self) -> float:
        return float(self.preprocessing.get("face_margin", 0.0))


_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for a given file (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = sha256_of(Path(real))
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def relative(models_dir: Path, path: Path) -> str:
    """`path` as the record names it: relative to models_dir (symlinks not followed), else absolute."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(models_dir)).as_posix()
    except ValueError:
        return os.path.abspath(path)


def read_record(models_dir: Path) -> dict[str, dict[str, Any]]:
    """{relative path: entry} from <models_dir>/models.lock.json; {} when absent or unreadable."""
    path = Path(models_dir) / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError) as err:
        logger.warning("ignoring unreadable %s: %s", path, err)
        return {}
    return {p: e for p, e in files.items() if isinstance(e, dict) and isinstance(e.get("sha256"), str)}


def update_record(models_dir: Path, entries: list[Provenance]) -> None:
    """Add or replace these files' entries in models.lock.json (written atomically)."""
    if not entries:
        return
    models_dir = Path(models_dir)
    files = read_record(models_dir)
    for p in entries:
        files[p.path] = p.to_record()
    body = {
        "_comment": "Written by `faceanalysis models pull` and `models quantize`: what each installed model file is "
                    "and the preprocessing face-attributes applies for it. `faceanalysis models verify` checks it.",
        "version": 1,
        "files": dict(sorted(files.items())),
    }
    target = models_dir / RECORD_FILE
    tmp = target.with_name(f".{RECORD_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(target)


def identify(entry: ModelFile, rel: str, digest: str, **kwargs) -> Provenance:
    """A Provenance from the manifest alone (official, variant or unknown)."""
    ident = entry.identify(digest)
    origin = {"official": "manifest (official weights)", "variant": f"manifest variant {digest[:12]}"}
    return Provenance(path=rel, sha256=digest, identity=ident.kind, description=ident.description,
                      preprocessing=ident.preprocessing,
                      preprocessing_from=origin.get(ident.kind, "manifest default (file unknown to the manifest)"),
                      **kwargs)


def resolve(models_dir: Path, path: Path, entry: ModelFile | None, metadata: dict[str, str] | None = None,
            record: dict[str, dict[str, Any]] | None = None) -> Provenance:
    """What the file at `path` is and what it needs, hashing it (once per process).

    `entry`: its manifest slot (None for files outside the manifest); `metadata`: its ONNX metadata
    (an int8 copy carries its fp32 file's preprocessing there)."""
    rel = relative(models_dir, path)
    digest = file_sha256(path)
    record = read_record(models_dir) if record is None else record
    rec = record.get(rel)
    if rec is not None:
        if rec["sha256"] == digest:
            return Provenance.from_record(rel, rec)
        logger.warning("%s changed since it was recorded in %s (recorded sha256 %s, now %s): identifying it by "
                       "its hash instead; run `faceanalysis models verify`", rel, RECORD_FILE, rec["sha256"][:12],
                       digest[:12])
    if entry is not None:
        found = identify(entry, rel, digest)
        if found.identity != UNKNOWN:
            return found
    if metadata and METADATA_PREPROCESSING in metadata:
        try:
            preprocessing = json.loads(metadata[METADATA_PREPROCESSING])
        except ValueError:
            preprocessing = None
        if isinstance(preprocessing, dict):
            source_sha = metadata.get(METADATA_SOURCE_SHA256, "")
            return Provenance(path=rel, sha256=digest, identity=INT8,
                              description=f"int8 copy of {metadata.get('quantized_from', 'an fp32 model')}",
                              preprocessing=preprocessing, preprocessing_from="its ONNX metadata (models quantize)",
                              derived_from={"sha256": source_sha} if source_sha else None)
    if entry is None:
        return Provenance(path=rel, sha256=digest, identity=UNKNOWN, description="not in the manifest",
                          preprocessing={}, preprocessing_from="none")
    found = identify(entry, rel, digest)
    logger.warning("%s (sha256 %s) is not a file the manifest or %s knows: using the official weights' "
                   "preprocessing %s, which may not suit it. Pull it with `faceanalysis models pull` from a mirror "
                   "that describes it (%s), or set FACEANALYSIS_FACE_MARGIN", rel, digest[:12], RECORD_FILE,
                   json.dumps(found.preprocessing, sort_keys=True), MIRROR_OVERRIDE_FILE)
    return found
