"""`faceanalysis analyze` and `faceanalysis visualize`.

`analyze` finishes any folder, however long it takes and whatever restarts on the way:
- `concurrency` workers each keep one `AnalyzeImages` stream open and feed it from one shared
  queue of pending images. A file is read only when its stream asks for the next request, and
  at most `WINDOW` images per stream are sent but unanswered, so memory stays bounded and a
  stream that breaks loses little work.
- A stream that ends with a retryable status (the server's maximum connection age, a restart,
  a busy server) puts its unanswered images back on the queue and reconnects with backoff.
  Answered images are never sent again.
- A per-image answer that says the server is busy or a peer is restarting (RESOURCE_EXHAUSTED,
  UNAVAILABLE) puts that image back on the queue after a backoff, and that stream sends fewer
  images at once (its window shrinks by one, down to 1, and grows back one at a time as answers
  come), so `concurrency` streams settle at what the server admits instead of being refused
  over and over. Other per-image errors (INVALID_ARGUMENT, ...) are final and listed at the end.
- The run gives up (exit 2) only when no image was answered for `retry_seconds`. There is no
  overall deadline; client keepalive notices a server that vanished.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import sys
import threading
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from faceanalysis.cli.draw import annotate
from faceanalysis.client import Connection
from faceanalysis.runtime import channels, results
from faceanalysis.runtime.tls import TlsError
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


# Sent-but-unanswered images per stream, at most: what a broken stream can lose, and what it
# holds in memory. Busy answers shrink a stream's window below this; results grow it back.
WINDOW = 4
# Reconnect backoff after a stream broke; per-image backoff after a busy answer.
INITIAL_BACKOFF, MAX_BACKOFF = 0.2, 5.0
# Images a broken stream left unanswered wait this long before they are sent again, so that work
# the server finished for them anyway has landed in its result cache and is answered from there.
REQUEUE_DELAY = 1.0
# After this long without an answer, say once what we are waiting for.
NOTICE_AFTER = 10.0
MAX_MESSAGE_BYTES = channels.PEER_MESSAGE_BYTES

RETRYABLE_STREAM_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})


def retryable_stream_error(err: grpc.RpcError) -> bool:
    """A stream that ended like this is worth opening again: the server restarted, closed an aged
    connection, was busy, or the connection was reset."""
    code = err.code()
    return code in RETRYABLE_STREAM_CODES or (code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (err.details() or ""))


def dial(target: str | Connection) -> grpc.Channel:
    """A channel with the services' own options (fast reconnect, keepalive, our retries only),
    whose keepalive also runs on an idle stream, so a server that vanished is noticed. A
    Connection adds TLS, an authority and the API key."""
    connection = target if isinstance(target, Connection) else Connection(target)
    return connection.channel([
        *channels.channel_options(MAX_MESSAGE_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ])


class _Run:
    """What the workers share: the queue of pending images, progress, and the outcome."""

    def __init__(self, files: list[Path], names: list[str], options, out: Path, visualize: Path | None,
                 target: str, bar):
        self.files, self.names, self.options = files, names, options
        self.out, self.visualize, self.target, self.bar = out, visualize, target, bar
        self.cond = threading.Condition()
        self._order = itertools.count()
        # Pending images as (not before, order, index); taken by whichever stream asks first.
        self.pending = [(0.0, next(self._order), i) for i in range(len(files))]
        self.retries = [0] * len(files)  # busy answers per image, for its backoff
        self.outstanding = len(files)  # images without a final answer
        self.last_progress = time.monotonic()
        self.last_error: tuple[str, str] | None = None  # (code, message) of the latest retryable failure
        self.fatal: str | None = None
        self.calls: set = set()
        self.failures: list[str] = []
        self.analyzed = 0
        self.faces = 0

    # --- the queue (callers hold self.cond) -------------------------------------------------
    def finished(self) -> bool:
        return self.outstanding == 0 or self.fatal is not None

    def take(self) -> int | None:
        if self.pending and self.pending[0][0] <= time.monotonic():
            return heapq.heappop(self.pending)[2]
        return None

    def wait_hint(self) -> float:
        if not self.pending:
            return 0.25
        return max(0.01, min(0.25, self.pending[0][0] - time.monotonic()))

    def put_back(self, index: int, delay: float) -> None:
        heapq.heappush(self.pending, (time.monotonic() + delay, next(self._order), index))
        self.cond.notify_all()

    def _final(self) -> None:
        self.outstanding -= 1
        self.last_progress = time.monotonic()
        self.bar.update(1)
        self.cond.notify_all()

    def give_up(self, message: str) -> None:
        """Stop the run (callers hold self.cond); returns at once, the streams end shortly."""
        if self.fatal is None:
            self.fatal = message
        calls = list(self.calls)
        self.cond.notify_all()
        # Cancelling takes the call's own lock only; the streams then end with CANCELLED.
        for call in calls:
            call.cancel()

    # --- per image ----------------------------------------------------------------------------
    def request_for(self, index: int) -> image_input_pb2.AnalyzeImageRequest | None:
        """The request for one image, read from disk now; None (a final failure) if it cannot be sent."""
        path = self.files[index]
        try:
            size = path.stat().st_size
            if size > MAX_MESSAGE_BYTES:
                raise ValueError(f"RESOURCE_EXHAUSTED: the file is {size} bytes; at most {MAX_MESSAGE_BYTES} "
                                 "bytes can be sent")
            data = path.read_bytes()
        except (OSError, ValueError) as err:
            with self.cond:
                self.failures.append(f"{path}: {err}")
                self._final()
            return None
        return image_input_pb2.AnalyzeImageRequest(image=data, options=self.options, client_ref=self.names[index])

    def answer(self, index: int, resp: image_input_pb2.AnalyzeImagesResponse) -> bool:
        """Handle one answer; False when it was a busy answer and the image is queued again."""
        if resp.HasField("error"):
            if resp.error.retryable:  # busy, or a peer was down: the same image may succeed later
                with self.cond:
                    self.retries[index] += 1
                    self.last_error = (resp.error.code, resp.error.message)
                    self.put_back(index, min(INITIAL_BACKOFF * 2 ** (self.retries[index] - 1), MAX_BACKOFF))
                return False
            with self.cond:
                self.failures.append(f"{self.files[index]}: {resp.error.code}: {resp.error.message}")
                self._final()
            return True
        problem = None
        try:
            write_json(self.out / f"{self.names[index]}.json", resp.result)
            if self.visualize is not None:
                annotate(self.files[index], resp.result, self.visualize / f"{self.names[index]}.png")
        except Exception as err:  # a full disk or an undrawable picture fails this image, not the run
            problem = f"{self.files[index]}: analyzed, but writing its output failed: {err}"
        with self.cond:
            if problem:
                self.failures.append(problem)
            else:
                self.analyzed += 1
                self.faces += len(resp.result.faces)
            self._final()
        return True


class _Stream:
    """One AnalyzeImages call: requests drawn lazily from the shared queue, answers matched by index."""

    def __init__(self, run: _Run, stub, timeout: float | None, window: int = WINDOW):
        self.run, self.stub, self.timeout = run, stub, timeout
        self.sent: list[int] = []  # position on the stream -> image index
        self.unanswered: set[int] = set()  # positions sent and not answered yet
        self.window = window  # how many may be unanswered now (1..WINDOW)
        self._streak = 0  # answers since the window last changed
        self.over = False

    def _adapt(self, busy: bool) -> None:
        """One image fewer in flight after a busy answer; one more after 2 x `window` results in a row."""
        if busy:
            self.window, self._streak = max(1, self.window - 1), 0
            return
        self._streak += 1
        if self.window < WINDOW and self._streak >= 2 * self.window:
            self.window, self._streak = self.window + 1, 0

    def requests(self):
        run = self.run
        while True:
            with run.cond:
                index = None
                while True:
                    if self.over or run.finished():
                        return  # half-close: the server answers what it holds, then ends the stream
                    if len(self.unanswered) < self.window:
                        index = run.take()
                        if index is not None:
                            break
                    run.cond.wait(run.wait_hint())
            request = run.request_for(index)  # outside the lock: reading a file can be slow
            if request is None:
                continue
            with run.cond:
                if self.over or run.fatal is not None:
                    run.put_back(index, 0)
                    return
                self.unanswered.add(len(self.sent))
                self.sent.append(index)
            yield request

    def run_once(self) -> tuple[grpc.RpcError | None, int]:
        """Open the stream and read it to its end: (the error it ended with or None, answers received)."""
        run = self.run
        answered = 0
        call = self.stub.AnalyzeImages(self.requests(), timeout=self.timeout)
        with run.cond:
            run.calls.add(call)
            cancel = run.fatal is not None
        if cancel:
            call.cancel()
        try:
            for resp in call:
                with run.cond:
                    if resp.index not in self.unanswered:
                        continue  # not ours to count twice
                    self.unanswered.discard(resp.index)
                    index = self.sent[resp.index]
                final = run.answer(index, resp)
                with run.cond:
                    self._adapt(busy=not final)
                    run.cond.notify_all()  # a slot of the window is free
                answered += final
            return None, answered
        except grpc.RpcError as err:
            return err, answered
        finally:
            with run.cond:
                self.over = True
                run.calls.discard(call)
                for position in sorted(self.unanswered):
                    run.put_back(self.sent[position], REQUEUE_DELAY)
                self.unanswered.clear()
                run.cond.notify_all()


def _worker(run: _Run, stub, timeout: float | None) -> None:
    backoff = INITIAL_BACKOFF
    window = WINDOW
    try:
        while True:
            with run.cond:
                if run.finished():
                    return
            stream = _Stream(run, stub, timeout, window)
            err, answered = stream.run_once()
            window = stream.window  # a busy server stays busy across reconnects
            with run.cond:
                if run.finished():
                    return
                if err is not None and not retryable_stream_error(err):
                    run.give_up(f"image-input at {run.target}: {err.code().name}: {err.details()}")
                    return
                if err is not None:
                    run.last_error = (err.code().name, err.details() or "")
                if answered:
                    backoff = INITIAL_BACKOFF
                wake = time.monotonic() + backoff
                while not run.finished() and (left := wake - time.monotonic()) > 0:
                    run.cond.wait(left)
            backoff = min(backoff * 2, MAX_BACKOFF)
    except Exception as err:  # never leave the run waiting on a worker that died
        with run.cond:
            run.give_up(f"image-input at {run.target}: client error: {type(err).__name__}: {err}")


def analyze(paths: list[str], target: str | Connection, out: Path, visualize: Path | None, concurrency: int,
            no_store: bool = False, skip_cache: bool = False, timeout: float | None = None,
            retry_seconds: float = 120) -> int:
    """Analyze every image; 0 when all got results, 1 when some were refused, 2 when we gave up.

    `timeout` bounds each stream (None: no deadline); `retry_seconds` is how long the run keeps
    trying while no image gets an answer. `target` is an address, or a Connection for TLS and keys.
    """
    files = collect(paths)
    if not files:
        print("no images found (looked for: " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")", file=sys.stderr)
        return 1
    names = output_names(files)
    options = common_pb2.AnalysisOptions(no_store=no_store, skip_cache=skip_cache)

    try:
        channel = dial(target)
    except TlsError as err:  # a CA file that cannot be read, no certificate to take for --insecure
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = target.target if isinstance(target, Connection) else target
    stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
    bar = tqdm(total=len(files), unit="image", desc="analyzing")
    run = _Run(files, names, options, out, visualize, target, bar)
    workers = [threading.Thread(target=_worker, args=(run, stub, timeout), name=f"analyze-{i}", daemon=True)
               for i in range(max(1, min(concurrency, len(files))))]
    interrupted = False
    try:
        for worker in workers:
            worker.start()
        noticed = False
        with run.cond:
            while not run.finished():
                idle = time.monotonic() - run.last_progress
                if idle > retry_seconds:
                    code, message = run.last_error or ("DEADLINE_EXCEEDED", "no answer")
                    run.give_up(f"image-input at {target}: {code}: {message}; no image was answered for "
                                f"{retry_seconds:g} s, giving up with {run.outstanding} of {len(files)} images left")
                    break
                if idle > NOTICE_AFTER and run.last_error and not noticed:
                    code, message = run.last_error
                    tqdm.write(f"waiting for image-input at {target} ({code}: {message}); retrying for up to "
                               f"{retry_seconds:g} s without an answer", file=sys.stderr)
                    noticed = True
                elif idle < NOTICE_AFTER:
                    noticed = False
                run.cond.wait(0.5)
    except KeyboardInterrupt:
        interrupted = True
        with run.cond:
            run.give_up("interrupted")
    finally:
        # Streams end once the server answered everything; one that does not is cancelled.
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        with run.cond:
            leftover = list(run.calls)
        for call in leftover:
            call.cancel()
        for worker in workers:
            worker.join(timeout=5)
        bar.close()
        channel.close()
    print(f"{run.analyzed} of {len(files)} images analyzed, {run.faces} faces; JSON in {out}"
          + (f", pictures in {visualize}" if visualize else ""))
    for line in run.failures:
        print(f"failed: {line}", file=sys.stderr)
    if interrupted:
        print(f"interrupted: {run.outstanding} of {len(files)} images not analyzed", file=sys.stderr)
        return 130
    if run.fatal is not None:
        print(f"error: {run.fatal}", file=sys.stderr)
        return 2
    return 1 if run.failures else 0


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
