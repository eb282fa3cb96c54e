"""Annotated pictures: boxes, the 68 landmarks and an age/gender/emotion label per face."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from faceanalysis.v1 import common_pb2

GENDER_SHORT = {common_pb2.GENDER_WOMAN: "woman", common_pb2.GENDER_MAN: "man"}


def label(face: common_pb2.Face) -> str:
    parts = []
    if face.HasField("age"):
        parts.append(f"{face.age.years:.0f}y")
    if face.HasField("gender") and face.gender.label in GENDER_SHORT:
        parts.append(f"{GENDER_SHORT[face.gender.label]} {face.gender.confidence:.0%}")
    if face.HasField("emotion") and face.emotion.dominant:
        parts.append(f"{face.emotion.dominant} {face.emotion.scores[face.emotion.dominant]:.0%}")
    return " | ".join(parts)


def annotate(image_path: Path, result: common_pb2.AnalysisResult, out_path: Path) -> Path:
    with Image.open(image_path) as opened:
        # Coordinates are in the EXIF-oriented image, as the service saw it.
        img = ImageOps.exif_transpose(opened).convert("RGB")
    draw = ImageDraw.Draw(img)
    scale = max(1, round(max(img.size) / 800))
    font = ImageFont.load_default(size=12 * scale)
    for face in result.faces:
        b = face.box
        draw.rectangle([b.x, b.y, b.x + b.width, b.y + b.height], outline=(0, 255, 0), width=2 * scale)
        r = scale * 1.5
        for p in face.landmarks:
            draw.ellipse([p.x - r, p.y - r, p.x + r, p.y + r], fill=(255, 60, 60))
        text = label(face)
        if text:
            left, top, right, bottom = draw.textbbox((b.x, b.y), text, font=font)
            y = b.y - (bottom - top) - 4 * scale
            y = y if y >= 0 else b.y + b.height + 2 * scale
            draw.rectangle([b.x, y, b.x + (right - left) + 4 * scale, y + (bottom - top) + 4 * scale], fill=(0, 0, 0))
            draw.text((b.x + 2 * scale, y), text, fill=(255, 255, 255), font=font)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
