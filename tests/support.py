"""Paths and helpers shared by the tests."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEANALYSIS_SHARED", ROOT.parent / "shared"))
IMAGES = SHARED / "images"
MIRROR = Path(os.environ.get("FACEANALYSIS_MODEL_MIRROR", SHARED / "models")).resolve()
# The stand-in DeepFace models want a wide crop (see shared/models/README.md).
TEST_MARGIN = "0.4"


def alive(pid: int) -> bool:
    """True while a process with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def image(relative: str) -> Path:
    path = IMAGES / relative
    if not path.is_file():
        pytest.fail(f"test photo {path} is missing: the shared folder must sit beside the repository")
    return path


SOURCE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def distinct_photos(folder: Path, count: int, longest_side: int = 640) -> list[Path]:
    """`count` JPEGs made from the shared photos, each with its own bytes and sha256 (so no answer
    comes from the result cache): scaled to `longest_side`, the n-th copy of a photo `n` pixels
    narrower and saved at a slightly different quality."""
    from PIL import Image, ImageOps

    sources = sorted(p for p in IMAGES.rglob("*") if p.suffix.lower() in SOURCE_SUFFIXES)
    assert len(sources) >= 30, f"expected the shared photos in {IMAGES}"
    bases = []
    for source in sources:
        with Image.open(source) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((longest_side, longest_side))
            bases.append((source.stem, img))
    folder.mkdir(parents=True, exist_ok=True)
    files, digests = [], set()
    for i in range(count):
        stem, img = bases[i % len(bases)]
        copy = i // len(bases)
        if copy:
            img = img.crop((0, 0, img.width - copy, img.height))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=92 - copy)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        assert digest not in digests
        digests.add(digest)
        path = folder / f"{i:03d}-{stem}.jpg"
        path.write_bytes(data)
        files.append(path)
    return files
