"""`faceanalysis analyze` and `faceanalysis visualize`.

`analyze` finishes any folder, however long it takes and whatever restarts on the way. The
streaming, retries and backoff are faceanalysis.runtime.batch's (shared with
Client.analyze_many): `concurrency` streams of at most `WINDOW` unanswered images each, files read
only when a stream asks for them, broken streams reopened and busy answers sent again, and only
unanswered images ever sent twice. Other per-image errors (INVALID_ARGUMENT, ...) are final and
listed at the end. The run gives up (exit 2) only when no image was answered for `retry_seconds`;
there is no overall deadline, and client keepalive notices a server that vanished.

Results are written as they come (completion order) by a sink of cli/output.py: one JSON file per
image (--format json), or JSON lines or CSV on stdout; with stdout carrying data, the progress bar
(always on stderr) and the summary go to stderr.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from tqdm import tqdm

from faceanalysis.cli import output
from faceanalysis.cli.draw import annotate
from faceanalysis.client import MAX_MESSAGE_BYTES, Analysis, AnalysisError, Connection, analysis_options, dial
from faceanalysis.client import image_bytes
from faceanalysis.runtime import results
from faceanalysis.runtime.batch import WINDOW, Batch
from faceanalysis.runtime.tls import TlsError
from faceanalysis.v1 import image_input_pb2, image_input_pb2_grpc

__all__ = ["IMAGE_SUFFIXES", "MAX_MESSAGE_BYTES", "WINDOW", "analyze", "collect", "dial", "output_names", "visualize"]

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


def analyze(paths: list[str], target: str | Connection, out: Path | None, visualize: Path | None, concurrency: int,
            no_store: bool = False, skip_cache: bool = False, timeout: float | None = None,
            retry_seconds: float = 120, *, actions: list[str] | None = None, detection_threshold: float | None = None,
            min_face: int | None = None, fmt: str = "json", per: str | None = None) -> int:
    """Analyze every image; 0 when all got results, 1 when some were refused, 2 when we gave up,
    130 when interrupted, 141 when stdout was closed (a pipe into `head`).

    `timeout` bounds each stream (None: no deadline); `retry_seconds` is how long the run keeps
    trying while no image gets an answer. `target` is an address, or a Connection for TLS and keys.
    `fmt` json writes <out>/<name>.json; jsonl and csv write to stdout, `per` image or face
    (defaults: jsonl per image, csv per face).
    """
    files = collect(paths)
    if not files:
        print("no images found (looked for: " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")", file=sys.stderr)
        return 1
    names = output_names(files)
    options = analysis_options(actions=actions, detection_threshold=detection_threshold, min_face=min_face,
                               no_store=no_store, skip_cache=skip_cache)
    per = per or ("image" if fmt == "jsonl" else "face")
    report = sys.stdout if fmt == "json" else sys.stderr  # stdout is the data's when it carries records

    try:
        channel = dial(target)
    except TlsError as err:  # a CA file that cannot be read, no certificate to take for --insecure
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = target.target if isinstance(target, Connection) else target

    def request_for(index: int) -> image_input_pb2.AnalyzeImageRequest:
        return image_input_pb2.AnalyzeImageRequest(image=image_bytes(files[index]), options=options,
                                                   client_ref=names[index])

    def notice(text: str) -> None:
        tqdm.write(f"waiting for image-input at {target} ({text})", file=sys.stderr)

    batch = Batch(image_input_pb2_grpc.FaceAnalysisStub(channel), range(len(files)), request_for,
                  streams=max(1, min(concurrency, len(files))), window=WINDOW, timeout=timeout,
                  retry_seconds=retry_seconds, notice=notice)
    sink = output.sink(fmt, per, out, sys.stdout)
    tally = output.Tally()
    failures: list[str] = []
    bar = tqdm(total=len(files), unit="image", desc="analyzing", file=sys.stderr)
    code, fatal = 0, ""
    outcomes = iter(batch)
    try:
        for index, outcome in outcomes:
            bar.update(1)
            if isinstance(outcome, AnalysisError):
                failures.append(f"{files[index]}: {outcome.code}: {outcome.message}")
                tally.failed += 1
                sink.failure(files[index], outcome)
                continue
            analysis = Analysis.from_proto(outcome)
            try:
                sink.result(files[index], names[index], analysis)
                if visualize is not None:
                    annotate(files[index], outcome, visualize / f"{names[index]}.png")
            except BrokenPipeError:
                raise
            except Exception as err:  # a full disk or an undrawable picture fails this image, not the run
                failures.append(f"{files[index]}: analyzed, but writing its output failed: {err}")
                tally.failed += 1
                continue
            tally.add(analysis)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush does not fail too
        code = 141
    except AnalysisError as err:
        left = len(files) - tally.analyzed - tally.failed
        fatal = f"image-input at {target}: {err}; giving up with {left} of {len(files)} images left"
        if err.code == "UNAUTHENTICATED":
            fatal += "\nhint: pass the key with --api-key, or better FACEANALYSIS_API_KEY (kept out of shell history)"
        code = 2
    finally:
        outcomes.close()  # stops and cancels the streams when the run ends early
        bar.close()
        channel.close()
    summary = tally.lines(len(files))
    if fmt == "json":
        summary[0] += f"; JSON in {out}"
    if visualize:
        summary[0] += f", pictures in {visualize}"
    print("\n".join(summary), file=report, flush=True)
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    if code == 130:
        print(f"interrupted: {len(files) - tally.analyzed - tally.failed} of {len(files)} images not analyzed",
              file=sys.stderr)
    elif code == 2:
        print(f"error: {fatal}", file=sys.stderr)
    elif code == 0 and failures:
        code = 1
    return code


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
