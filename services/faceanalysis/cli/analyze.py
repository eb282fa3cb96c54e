"""`faceanalysis analyze` and `faceanalysis visualize`."""

from __future__ import annotations

import hashlib
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from tqdm import tqdm

from faceanalysis.cli.draw import annotate
from faceanalysis.runtime import channels, results
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def collect(paths: list[str]) -> list[Path]:
    """Image files named or found (recursively) in the given folders, sorted, without duplicates."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    found[p] = None
        elif path.is_file():
            found[path] = None
        else:
            raise SystemExit(f"no such file or folder: {path}")
    return list(found)


def output_names(files: list[Path]) -> list[str]:
    """One JSON name per input, after its file stem; a repeated stem gets a numeric suffix."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        names.append(f.stem if n == 0 else f"{f.stem}-{n}")
    return names


def write_json(path: Path, result: common_pb2.AnalysisResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(results.to_json(result, indent=2) + "\n")
    tmp.replace(path)


def analyze(paths: list[str], target: str, out: Path, visualize: Path | None, concurrency: int,
            no_store: bool = False, skip_cache: bool = False, timeout: float = 600) -> int:
    files = collect(paths)
    if not files:
        print("no images found (looked for: " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")", file=sys.stderr)
        return 1
    names = output_names(files)
    options = common_pb2.AnalysisOptions(no_store=no_store, skip_cache=skip_cache)

    channel = channels.dial(target, retries=0, max_message_bytes=channels.PEER_MESSAGE_BYTES)
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    failures: list[str] = []
    face_counts: list[int] = []
    # The server bounds in-flight work per stream; `concurrency` streams share the files.
    shards = [list(range(i, len(files), concurrency)) for i in range(max(1, min(concurrency, len(files))))]
    bar = tqdm(total=len(files), unit="image", desc="analyzing")
    lock = threading.Lock()
    try:

        def run_shard(indices: list[int]) -> None:
            def shard_requests():
                for i in indices:
                    yield image_input_pb2.AnalyzeImageRequest(image=files[i].read_bytes(), options=options,
                                                              client_ref=names[i])

            for resp in stub.AnalyzeImages(shard_requests(), timeout=timeout):
                i = indices[resp.index]
                if resp.HasField("error"):
                    failures.append(f"{files[i]}: {resp.error.code}: {resp.error.message}")
                else:
                    write_json(out / f"{names[i]}.json", resp.result)
                    if visualize is not None:
                        annotate(files[i], resp.result, visualize / f"{names[i]}.png")
                with lock:
                    face_counts.append(len(resp.result.faces))
                    bar.update(1)

        with ThreadPoolExecutor(len(shards)) as pool:
            for fut in [pool.submit(run_shard, s) for s in shards]:
                fut.result()
    except grpc.RpcError as err:
        bar.close()
        print(f"error: image-input at {target}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        channel.close()
    print(f"{len(files) - len(failures)} of {len(files)} images analyzed, {sum(face_counts)} faces; JSON in {out}"
          + (f", pictures in {visualize}" if visualize else ""))
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failures else 0


def visualize(results_dir: Path, images: list[str], out: Path) -> int:
    """Draw stored JSON results onto their images, matched by file stem and checked by sha256."""
    files = collect(images)
    names = dict(zip(output_names(files), files))
    jsons = sorted(results_dir.glob("*.json"))
    if not jsons:
        print(f"no result JSON in {results_dir}", file=sys.stderr)
        return 1
    drawn, problems = 0, []
    for path in tqdm(jsons, unit="image", desc="drawing"):
        image = names.get(path.stem)
        if image is None:
            problems.append(f"{path.name}: no image named {path.stem}.* among the inputs")
            continue
        result = results.from_json(path.read_text())
        if result.image.sha256 and hashlib.sha256(image.read_bytes()).hexdigest() != result.image.sha256:
            problems.append(f"{path.name}: {image} is not the image that was analyzed (sha256 differs)")
            continue
        annotate(image, result, out / f"{path.stem}.png")
        drawn += 1
    print(f"{drawn} pictures in {out}")
    for line in problems:
        print(f"skipped: {line}", file=sys.stderr)
    return 1 if problems else 0
