"""Make the e2e test photo: a real face photo enlarged to a multi-MB, ~16 MP JPEG.

Usage: python big_photo.py SOURCE OUT [--scale 4] [--min-mb 4]

The source is a small public photo with one face (the e2e job downloads face_recognition's
examples/obama.jpg at a pinned commit and checks its sha256). Enlarging alone compresses too
well, so a little zero-mean sensor-like noise is added: the JPEG then weighs what a phone photo
does (several MB), which is what the edge must carry (body size limits, HTTP/2 flow control,
timeouts). The face stays detectable: noise of sigma 6 on 0-255 does not hide it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageChops

MAX_PIXELS = 40_000_000  # image-input's default max_image_pixels: stay well inside it


def enlarge(source: Path, out: Path, scale: int, sigma: float) -> tuple[int, int, int]:
    """Write the enlarged, noised JPEG; returns (width, height, bytes)."""
    with Image.open(source) as img:
        img = img.convert("RGB")
        size = (img.width * scale, img.height * scale)
        if size[0] * size[1] > MAX_PIXELS:
            raise SystemExit(f"{size[0]}x{size[1]} is over {MAX_PIXELS} pixels: use a smaller --scale")
        big = img.resize(size, Image.Resampling.LANCZOS)
    # effect_noise gives 8-bit Gaussian noise around 128; adding it with offset -128 is zero-mean.
    noise = Image.effect_noise(size, sigma).convert("RGB")
    noisy = ImageChops.add(big, noise, scale=1.0, offset=-128)
    noisy.save(out, "JPEG", quality=95, subsampling=0)
    return size[0], size[1], out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sigma", type=float, default=6.0)
    parser.add_argument("--min-mb", type=float, default=4.0)
    args = parser.parse_args(argv)
    width, height, size = enlarge(args.source, args.out, args.scale, args.sigma)
    print(f"{args.out}: {width}x{height}, {size / 1e6:.1f} MB")
    if size < args.min_mb * 1e6:
        print(f"expected at least {args.min_mb} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
