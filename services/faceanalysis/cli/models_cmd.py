"""`faceanalysis models pull|list|verify|quantize`."""

from __future__ import annotations

import sys
from pathlib import Path

from faceanalysis import models
from faceanalysis.models.pull import PullError, pull


def run_pull(models_dir: Path, only: str | None, mirror: str | None, force: bool, progress: bool,
             allow_unverified: bool = False) -> int:
    from faceanalysis.models.verify import format_preprocessing

    try:
        outcomes = pull(models_dir, service=only, mirror_location=mirror, progress=progress, force=force,
                        allow_unverified=allow_unverified)
    except PullError as err:
        print(f"models pull failed:\n  {err}", file=sys.stderr)
        if not mirror:
            print("hint: without internet access, set FACEANALYSIS_MODEL_MIRROR to a directory or URL "
                  "that holds the model files (and ideally a SHA256SUMS)", file=sys.stderr)
        return 1
    if not outcomes:
        print(f"{only or 'this selection'} needs no model files; nothing to pull")
    for o in outcomes:
        state = "kept" if o.skipped else "pulled"
        check = (f"sha256 ok: {o.provenance.verified_by}" if o.verified
                 else f"sha256 UNVERIFIED (allowed): {o.sha256}")
        print(f"{state:6} {o.path}  [{check}]  from {o.source}")
        p = o.provenance
        if p is not None:
            print(f"       {p.identity}: {p.description}; preprocessing {format_preprocessing(p.preprocessing)} "
                  f"(from {p.preprocessing_from})")
            if p.identity == models.UNKNOWN:
                print(f"       warning: {o.name} is not a file the manifest knows (the official weights, whose "
                      f"bytes the manifest could not hash, or other ones); it gets the official weights' "
                      f"preprocessing", file=sys.stderr)
    return 0


def run_verify(models_dir: Path, only: str | None, allow_unverified: bool) -> int:
    """What each file in the models directory is; exit 1 on a missing, changed, unknown or unverified file."""
    from faceanalysis.models.verify import report, verify

    checks = verify(models_dir, service=only, allow_unverified=allow_unverified)
    print(f"models directory {Path(models_dir).resolve()}")
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1


def run_list(models_dir: Path) -> int:
    for entry in models.manifest().files:
        path = entry.location(models_dir)
        state = "present" if path.is_file() else "MISSING"
        print(f"{state:8} {entry.path:50} {entry.task:15} {','.join(entry.services):16} {entry.license}")
    return 0


def run_quantize(models_dir: Path, calibration: Path, eval_dir: Path | None, only: str, limit: int,
                 progress: bool) -> int:
    """int8 copies of the attribute models in `models_dir`, then how well they agree with fp32 on
    the faces in `eval_dir` (default: the calibration photos)."""
    import time

    from faceanalysis.models import quantize

    weights_dir = Path(models_dir) / ".deepface" / "weights"
    eval_dir = eval_dir or calibration
    try:
        names = quantize.check_names(only)
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        start = time.perf_counter()
        written = quantize.quantize_models(weights_dir, calibration, names=names, limit=limit, progress=progress,
                                           models_dir=models_dir)
        elapsed = time.perf_counter() - start
        for name, path in written.items():
            print(f"wrote {path}  ({path.stat().st_size / 1e6:.1f} MB, {name})")
        print(f"quantized {', '.join(written)} in {elapsed:.1f} s")
        result = quantize.agreement(weights_dir, eval_dir, names=names, progress=progress, models_dir=models_dir)
    except (models.ModelMissing, quantize.QuantizeError, ValueError) as err:
        print(f"models quantize failed:\n  {err}", file=sys.stderr)
        return 1
    print(f"\nfp32 vs int8 on the faces in {eval_dir}:")
    print(quantize.format_agreement(result))
    print(f"\nto serve them: FACEANALYSIS_INT8_MODELS={','.join(written)}")
    return 0
