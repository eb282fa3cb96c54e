"""`faceanalysis models pull|list`."""

from __future__ import annotations

import sys
from pathlib import Path

from faceanalysis import models
from faceanalysis.models.pull import PullError, pull


def run_pull(models_dir: Path, only: str | None, mirror: str | None, force: bool, progress: bool) -> int:
    try:
        outcomes = pull(models_dir, service=only, mirror_location=mirror, progress=progress, force=force)
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
        check = "sha256 ok" if o.verified else "sha256 UNVERIFIED (no known hash; pinned in SHA256SUMS)"
        print(f"{state:6} {o.path}  [{check}]  from {o.source}")
    return 0


def run_list(models_dir: Path) -> int:
    for entry in models.manifest().files:
        path = entry.location(models_dir)
        state = "present" if path.is_file() else "MISSING"
        print(f"{state:8} {entry.path:50} {entry.task:15} {','.join(entry.services):16} {entry.license}")
    return 0
