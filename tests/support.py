"""Paths and helpers shared by the tests."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEANALYSIS_SHARED", ROOT.parent / "shared"))
IMAGES = SHARED / "images"
MIRROR = Path(os.environ.get("FACEANALYSIS_MODEL_MIRROR", SHARED / "models")).resolve()
# The stand-in DeepFace models want a wide crop (see shared/models/README.md), and say so themselves:
# the manifest knows them by sha256 (face_margin 0.4), so no test sets FACEANALYSIS_FACE_MARGIN;
# tests that need the margin read it from the models (`model_margin`).


def model_margin(models_dir: Path) -> float:
    """The one face margin the attribute models in `models_dir` want, from their metadata (as
    face-attributes reads it)."""
    from faceanalysis.face_attributes.predictor import MODEL_FILES, fp32_provenance

    weights = Path(models_dir) / ".deepface" / "weights"
    margins = {fp32_provenance(weights, name).face_margin for name in MODEL_FILES}
    assert len(margins) == 1, f"the attribute models want different margins: {margins}"
    return margins.pop()


def alive(pid: int) -> bool:
    """True while a process with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_image_input(local_stack, workdir: Path, **env):
    """Starts one more image-input process wired to `local_stack`'s peers (so the same Redis and
    archive), with its own settings (`FACEANALYSIS_X="1"`), and waits until it is SERVING.
    Returns its LocalStack; the caller stops it."""
    from faceanalysis.cli.stack import LocalStack

    stack = LocalStack(models_dir=local_stack.models_dir, archive_dir=local_stack.archive_dir, workdir=workdir,
                       random_ports=True, extra_env={"image-input": env})
    stack.grpc_ports.update({n: p for n, p in local_stack.grpc_ports.items() if n != "image-input"})
    stack.start_service("image-input")
    try:
        stack.wait_serving(["image-input"], timeout=30)
    except BaseException:
        stack.stop()
        raise
    return stack


def image(relative: str) -> Path:
    path = IMAGES / relative
    if not path.is_file():
        pytest.fail(f"test photo {path} is missing: the shared folder must sit beside the repository")
    return path


def unique_photo(relative: str) -> bytes:
    """The photo as a PNG no other test sends (its own sha256): nothing cached for it yet."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("faceanalysis-test", uuid.uuid4().hex)
    buf = io.BytesIO()
    Image.open(image(relative)).convert("RGB").save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


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


# The preprocessing face-attributes feeds DeepFace's models, as each attribute result names it.
FED_PREPROCESSING = {"input_size": "[224,224]", "color_order": "BGR", "pixel_range": "[0,1]"}
