"""Soak: the local stack under a steady mix of good and hostile uploads (`make soak`).

Starts Redis and the four services on random localhost ports, then keeps CONCURRENCY clients
busy for MINUTES: most send real photos (unary calls and streams), some send hostile bytes from
tests/hostile.py. Every answer is checked: a photo must come back with its faces, a hostile
upload with its status code. RESOURCE_EXHAUSTED marked "overloaded" is load shedding, not an
error: the client backs off and sends again, as a real client would.

It samples each process's RSS, threads and open file descriptors at rest (load paused and
in-flight work drained) after a warm-up (the first fifth of the run) and at the end; between
the two they must stay flat: RSS grows less than 5 %, threads and descriptors by no more than a
few. It also prints RSS every minute under load. Redis is held to its threads and descriptors only: its memory
is the results the soak asks it to keep. It prints the figures and exits 1 if anything failed.

    python -m tests.soak.soak --minutes 10 --concurrency 16
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
from PIL import Image

from faceanalysis.cli.stack import LocalStack
from faceanalysis.models.pull import pull
from faceanalysis.runtime import work
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.hostile import HOSTILE
from tests.support import MIRROR, image

PHOTOS = {"face_recognition/obama.jpg": 1, "face_recognition/two_people.jpg": 2, "misc/astronaut.png": 1,
          "misc/t1.jpg": 6, "dlib/dogs.jpg": 0, "deepface/couple.jpg": 2}
# Hostile kinds that are cheap to send many times (a few KB to a few MB each).
HOSTILE_KINDS = ["empty", "random bytes", "jpeg truncated halfway", "png bomb 20000x20000", "png with a bad checksum",
                 "jpeg sof 65500x65500", "webp with a bad riff size", "tiff header only", "1x1 png",
                 "apng, 10000 frames, the first 8x8", "gif", "png huge ztxt chunk"]
SAMPLE_SECONDS = 10
# Memory is compared at rest: load paused, in-flight work drained. Under load RSS swings by the
# size of whatever images happen to be in flight, which says nothing about a leak.
QUIET_SECONDS = 10
RSS_GROWTH_LIMIT = 0.05
COUNT_SLACK = 4  # threads or descriptors a process may add after warm-up (pools growing to size)
MiB = 1024 * 1024


def variants(path: str, count: int) -> list[bytes]:
    """Distinct encodings of one photo, so the cache cannot answer for the pipeline."""
    img = Image.open(image(path)).convert("RGB")
    out = []
    for i in range(count):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=70 + i % 25, comment=f"soak {i}".encode())
        out.append(buf.getvalue())
    return out


def sample(pid: int) -> tuple[int, int, int]:
    """(RSS KiB, threads, open descriptors) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, stack: LocalStack, minutes: float, concurrency: int, hostile_share: float):
        self.stack, self.concurrency, self.hostile_share = stack, concurrency, hostile_share
        self.until = time.monotonic() + minutes * 60
        self.outcomes: Counter = Counter()
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.photos = [(data, faces) for path, faces in PHOTOS.items() for data in variants(path, 20)]
        self.hostile = [(HOSTILE[k][0](), HOSTILE[k][1]) for k in HOSTILE_KINDS]
        self.samples: dict[str, list[tuple[float, int, int, int]]] = {}
        self.at_rest: dict[str, dict[str, tuple[int, int, int]]] = {}  # checkpoint -> process -> sample
        self.go = threading.Event()  # clients send while it is set
        self.go.set()

    def record(self, outcome: str, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if problem:
                self.unexpected.append(problem)

    def pick(self, rng: random.Random):
        if rng.random() < self.hostile_share:
            data, code = rng.choice(self.hostile)
            return data, None, code
        data, faces = rng.choice(self.photos)
        return data, faces, None

    def check(self, faces: int | None, code: grpc.StatusCode | None, result=None, error=None) -> None:
        """One answer against what it must be."""
        if error is not None:
            got_code, details = error
            if code is not None and got_code == code.name:
                self.record("refused as expected")
            else:
                self.record("unexpected error", f"{got_code}: {details[:200]}")
        elif code is not None:
            self.record("unexpected success", f"hostile upload expected {code.name} got a result")
        elif len(result.faces) != faces:
            self.record("wrong face count", f"expected {faces} faces, got {len(result.faces)}")
        else:
            self.record("analysed")

    def unary_client(self, seed: int) -> None:
        rng = random.Random(seed)
        with grpc.insecure_channel(self.stack.target("image-input"),
                                   options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
            stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
            while self.go.wait() and time.monotonic() < self.until:
                data, faces, code = self.pick(rng)
                request = image_input_pb2.AnalyzeImageRequest(
                    image=data, options=common_pb2.AnalysisOptions(skip_cache=True, no_store=rng.random() < 0.5))
                for attempt in range(20):
                    try:
                        reply = stub.AnalyzeImage(request, timeout=120)
                        self.check(faces, code, result=reply.result)
                    except grpc.RpcError as err:
                        if work.is_overloaded(err):
                            self.record("shed, sent again")
                            time.sleep(min(2.0, 0.05 * 2 ** attempt) * rng.uniform(0.5, 1.5))
                            continue
                        self.check(faces, code, error=(err.code().name, err.details() or ""))
                    break

    def stream_client(self, seed: int) -> None:
        """Streams of 5-30 uploads; what the server sheds goes into the next stream after a backoff,
        as `faceanalysis analyze` does."""
        rng = random.Random(seed)
        retry: list = []
        with grpc.insecure_channel(self.stack.target("image-input"),
                                   options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
            stub = image_input_pb2_grpc.FaceAnalysisStub(channel)
            while self.go.wait() and time.monotonic() < self.until:
                batch = retry + [self.pick(rng) for _ in range(rng.randint(5, 30) - len(retry))]
                retry = []
                requests = (image_input_pb2.AnalyzeImageRequest(
                    image=data, options=common_pb2.AnalysisOptions(skip_cache=True, no_store=True)) for data, _, _ in batch)
                try:
                    for answer in stub.AnalyzeImages(requests, timeout=600):
                        _, faces, code = batch[answer.index]
                        if answer.HasField("error"):
                            if answer.error.retryable:
                                self.record("shed, sent again")
                                retry.append(batch[answer.index])
                                continue
                            self.check(faces, code, error=(answer.error.code, answer.error.message))
                        else:
                            self.check(faces, code, result=answer.result)
                except grpc.RpcError as err:
                    self.record("stream failed", f"stream: {err.code().name}: {err.details()}")
                if retry:
                    time.sleep(rng.uniform(0.2, 1.0))

    @property
    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.stack.processes.items()}
        pids["redis"] = self.stack.redis.process.pid
        return pids

    def sampler(self) -> None:
        start = time.monotonic()
        while time.monotonic() < self.until:
            now = time.monotonic() - start
            for name, pid in self.pids.items():
                self.samples.setdefault(name, []).append((now, *sample(pid)))
            time.sleep(SAMPLE_SECONDS)

    def checkpoint(self, label: str) -> None:
        """Sample every process at rest: no new requests, in-flight ones given time to finish."""
        self.go.clear()
        time.sleep(QUIET_SECONDS)
        self.at_rest[label] = {name: sample(pid) for name, pid in self.pids.items()}
        self.go.set()

    def run(self, warm_up: float) -> None:
        streams = max(1, self.concurrency // 4)
        threads = [threading.Thread(target=self.stream_client, args=(i,)) for i in range(streams)]
        threads += [threading.Thread(target=self.unary_client, args=(100 + i,)) for i in range(self.concurrency - streams)]
        threads.append(threading.Thread(target=self.sampler))
        for t in threads:
            t.start()
        time.sleep(warm_up)
        self.checkpoint("after warm-up")
        self.until += QUIET_SECONDS  # the pause does not shorten the run
        for t in threads:
            t.join()
        self.checkpoint("at the end")

    def report(self) -> bool:
        ok = True
        print("\noutcomes:")
        for outcome, n in sorted(self.outcomes.items()):
            print(f"  {outcome:22} {n}")
        for problem, n in Counter(self.unexpected).most_common(10):
            print(f"  unexpected x{n}: {problem}")
        if self.unexpected:
            ok = False
        start, end = self.at_rest["after warm-up"], self.at_rest["at the end"]
        print(f"\nat rest (load paused {QUIET_SECONDS} s) after the warm-up and at the end:")
        print(f"  {'process':16} {'RSS MiB':>15} {'growth':>7} {'threads':>9} {'fds':>9}")
        for name in start:
            (rss0, threads0, fds0), (rss1, threads1, fds1) = start[name], end[name]
            growth = (rss1 - rss0) / rss0
            flat = threads1 - threads0 <= COUNT_SLACK and fds1 - fds0 <= COUNT_SLACK
            # Redis's memory is the results it was asked to keep: data, not a leak.
            rss_ok = growth < RSS_GROWTH_LIMIT or name == "redis"
            verdict = "ok" if rss_ok and flat else "FAIL"
            ok &= verdict == "ok"
            print(f"  {name:16} {rss0 / 1024:6.0f} -> {rss1 / 1024:<6.0f} {growth:7.1%} {threads0:>3} -> {threads1:<3} "
                  f"{fds0:>3} -> {fds1:<3} {verdict}")
        print("\nRSS (MiB) at each minute:")
        for name, rows in self.samples.items():
            per_minute = [f"{r[1] / 1024:.0f}" for r in rows[:: max(1, 60 // SAMPLE_SECONDS)]]
            print(f"  {name:16} {' '.join(per_minute)}")
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hostile-share", type=float, default=0.2, help="fraction of uploads that are hostile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceanalysis-soak-") as tmp:
        work_dir = Path(tmp)
        models_dir = work_dir / "models"
        pull(models_dir, mirror_location=str(MIRROR), progress=False)
        stack = LocalStack(models_dir=models_dir, archive_dir=work_dir / "archive", workdir=work_dir / "stack",
                           random_ports=True, extra_env={"*": {"FACEANALYSIS_LOG_LEVEL": "WARNING"}})
        with stack:
            soak = Soak(stack, args.minutes, args.concurrency, args.hostile_share)
            print(f"soak: {args.minutes:g} min, {args.concurrency} clients, {args.hostile_share:.0%} hostile uploads; "
                  f"logs in {stack.log_dir}", flush=True)
            started = time.monotonic()
            soak.run(warm_up=args.minutes * 60 / 5)
            took = time.monotonic() - started
            total = sum(soak.outcomes.values())
            print(f"{total} answers in {took:.0f} s ({total / took:.1f}/s)")
            ok = soak.report()
    print("\nsoak " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
