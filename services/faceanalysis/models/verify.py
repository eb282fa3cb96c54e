"""`faceanalysis models verify`: what each file in a models directory is, and whether it may be served.

For every manifest file (and each int8 copy `models quantize` wrote beside an attribute model) it
hashes the file and says what it is: the official file, a known variant (with its description),
a file a mirror vouched for when it was pulled, an int8 copy, or unknown; its sha256; what
verified it; and the preprocessing face-attributes will apply. A problem is a missing file, a
file changed since the pull recorded it (models.lock.json), a file that contradicts the official
sha256 the manifest records (neither it nor a known variant, nor recorded as verified), an int8
copy whose fp32 file has changed since it was quantized, or an UNVERIFIED file: one in a slot
whose official sha256 the manifest does not record (DeepFace's weights), that is no known variant
and that nothing verified. An UNVERIFIED file is reported as such, with its sha256, either way,
and is a problem (exit status 1) only when unverified files are not allowed (--allow-unverified,
FACEANALYSIS_ALLOW_UNVERIFIED_MODELS, the chart's global.models.allowUnverified).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from faceanalysis import models
from faceanalysis.models.provenance import (
    INT8,
    METADATA_PREPROCESSING,
    METADATA_SOURCE_SHA256,
    RECORD_FILE,
    Provenance,
    identify,
    read_record,
    sha256_of,
)
from faceanalysis.models.pull import ALLOW_UNVERIFIED_HOW

OK, MISSING, MISMATCH, UNVERIFIED, STALE = "ok", "MISSING", "MISMATCH", "UNVERIFIED", "STALE"


@dataclass
class Check:
    path: str  # relative to the models directory
    status: str  # OK, MISSING, MISMATCH, UNVERIFIED, STALE
    what: str = ""
    sha256: str = ""
    verified_by: str | None = None
    preprocessing: dict = field(default_factory=dict)
    preprocessing_from: str = ""
    note: str = ""
    allowed: bool = False  # an UNVERIFIED file when unverified files are allowed: reported, not a problem

    @property
    def ok(self) -> bool:
        return self.status == OK or (self.status == UNVERIFIED and self.allowed)


def _onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX, or unreadable: nothing to learn from it
        return {}
    return {p.key: p.value for p in model.metadata_props}


def _what(p: Provenance) -> str:
    labels = {"official": "official file", "variant": "known variant", "mirror": "described by the mirror",
              "unknown": "unknown file", INT8: "int8 copy"}
    label = labels.get(p.identity, p.identity)
    return f"{label}: {p.description}" if p.description else label


def check_file(entry: models.ModelFile, models_dir: Path, record: dict, allow_unverified: bool) -> Check:
    path = entry.location(models_dir)
    rel = entry.path
    if not path.is_file():
        return Check(rel, MISSING, note=f"run `faceanalysis models pull --only {entry.services[0]}`")
    actual = sha256_of(path)
    rec = record.get(rel)
    if rec is not None and rec["sha256"] != actual:
        found = identify(entry, rel, actual)
        return Check(rel, MISMATCH, _what(found), actual, None, found.preprocessing, found.preprocessing_from,
                     note=f"changed since it was pulled: {RECORD_FILE} records sha256 {rec['sha256']}")
    if rec is not None:
        found = Provenance.from_record(rel, rec)
    else:
        found = identify(entry, rel, actual, verified_by=None)
        if found.identity in ("official", "variant"):
            found = identify(entry, rel, actual,
                             verified_by="manifest sha256" if found.identity == "official" else "manifest variant")
    status = OK
    note = ""
    allowed = False
    if entry.identify(actual).known:
        verified_by = found.verified_by or ("manifest sha256" if actual == entry.sha256 else "manifest variant")
    else:
        verified_by = found.verified_by
        if verified_by is None:
            if entry.sha256:
                # The manifest records the official file's hash and these bytes contradict it:
                # allowing unverified files does not cover that.
                status, note = MISMATCH, ("neither the official file nor a known variant, and "
                                          + ("no pull recorded it" if rec is None else "nothing verified it"))
            else:
                status, allowed = UNVERIFIED, allow_unverified
                why = entry.unverified_reason or "no hash is known for it"
                known = "; nor is it a known variant" if entry.variants else ""
                note = (f"no hash can verify it ({why}{known}); "
                        + ("allowed: unverified files are allowed here" if allow_unverified else
                           f"a problem unless unverified files are allowed: {ALLOW_UNVERIFIED_HOW}")
                        + f"; to pin it, list its sha256 {actual} in a mirror's SHA256SUMS and pull from that mirror")
    return Check(rel, status, _what(found), actual, verified_by, found.preprocessing, found.preprocessing_from, note,
                 allowed)


def check_int8(fp32: Check, int8: Path, models_dir: Path, record: dict) -> Check:
    rel = int8.relative_to(models_dir).as_posix()
    actual = sha256_of(int8)
    rec = record.get(rel)
    if rec is not None and rec["sha256"] != actual:
        return Check(rel, MISMATCH, "int8 copy", actual,
                     note=f"changed since it was recorded: {RECORD_FILE} records sha256 {rec['sha256']}")
    if rec is not None:
        found = Provenance.from_record(rel, rec)
        source_sha = (found.derived_from or {}).get("sha256")
    else:
        meta = _onnx_metadata(int8)
        try:
            preprocessing = json.loads(meta.get(METADATA_PREPROCESSING, "null"))
        except ValueError:
            preprocessing = None
        source_sha = meta.get(METADATA_SOURCE_SHA256)
        found = Provenance(rel, actual, INT8, f"int8 copy of {Path(fp32.path).name}",
                           preprocessing or fp32.preprocessing,
                           "its ONNX metadata" if preprocessing else f"{Path(fp32.path).name} (not recorded)")
    status, note = OK, ""
    if source_sha and fp32.sha256 and source_sha != fp32.sha256:
        status, note = STALE, (f"quantized from an fp32 file with sha256 {source_sha}, but {Path(fp32.path).name} is "
                               f"now {fp32.sha256}: run `faceanalysis models quantize` again")
    return Check(rel, status, _what(found), actual, f"quantized from sha256 {source_sha}" if source_sha else None,
                 found.preprocessing, found.preprocessing_from, note)


def verify(models_dir: Path, service: str | None = None, allow_unverified: bool = False) -> list[Check]:
    from faceanalysis.models.quantize import int8_path

    models_dir = Path(models_dir)
    record = read_record(models_dir)
    checks = []
    for entry in models.manifest().for_service(service):
        result = check_file(entry, models_dir, record, allow_unverified)
        checks.append(result)
        quantized = int8_path(entry.location(models_dir))
        if "face-attributes" in entry.services and result.status != MISSING and quantized.is_file():
            checks.append(check_int8(result, quantized, models_dir, record))
    return checks


def format_preprocessing(preprocessing: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(preprocessing.items())) or "-"


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.status:10} {c.path}")
        if c.what:
            lines.append(f"{'':10}   what: {c.what}")
        if c.sha256:
            lines.append(f"{'':10}   sha256: {c.sha256}")
            lines.append(f"{'':10}   verified by: {c.verified_by or 'nothing'}")
            lines.append(f"{'':10}   preprocessing: {format_preprocessing(c.preprocessing)}"
                         + (f" (from {c.preprocessing_from})" if c.preprocessing_from and c.preprocessing else ""))
        if c.note:
            lines.append(f"{'':10}   note: {c.note}")
    bad = [c for c in checks if not c.ok]
    allowed = [c for c in checks if c.ok and c.status == UNVERIFIED]
    lines.append(f"{len(checks) - len(bad)} of {len(checks)} file(s) ok"
                 + (f" ({len(allowed)} of them UNVERIFIED, allowed)" if allowed else "")
                 + (f"; {len(bad)} problem(s)" if bad else ""))
    return "\n".join(lines)
