"""The two arms of `faceanalysis bench`: the DeepFace loop in a process of its own, and a local
stack driven through its public API; one timed pass of either gives a PassResult."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from faceanalysis.benchmark.procs import cpu_seconds
from faceanalysis.runtime import services
from faceanalysis.v1 import common_pb2

# A photo the stack sheds (RESOURCE_EXHAUSTED, "overloaded": more in flight than the default
# FACEANALYSIS_MAX_CONCURRENT_IMAGES) is sent again after this backoff, as a real client does.
SHED_BACKOFF, SHED_BACKOFF_MAX, SHED_TRIES = 0.02, 0.5, 200


@dataclass
class PassResult:
    wall: float
    latencies: list  # seconds per photo, None where it failed
    faces: list  # per photo: [{"box": [x, y, w, h], "gender": "Man" | "Woman"}], None where it failed
    errors: dict  # photo index -> message
    cpu: float  # CPU seconds of the arm's processes during the pass
    client_cpu: float = 0.0  # CPU seconds of this process (the gRPC client) during the pass
    shed: int = 0  # answers "overloaded, send again"
    cpu_by_process: dict = field(default_factory=dict)  # stack: CPU seconds of each of its processes

    @property
    def analysed(self) -> int:
        return sum(f is not None for f in self.faces)

    @property
    def face_count(self) -> int:
        return sum(len(f) for f in self.faces if f is not None)


class Baseline:
    """The loop in its own process (benchmark/baseline.py), driven over stdin/stdout."""

    label = "loop"

    def __init__(self, deepface_home: Path, predictor: Path, expand_percentage: int, log_file: Path):
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faceanalysis.benchmark.baseline", "--deepface-home", str(deepface_home),
                 "--predictor", str(predictor), "--expand-percentage", str(expand_percentage)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        self.info: dict = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the baseline process exited ({code}); its log {self.log_file} ends:\n{tail}")
        msg = json.loads(line)
        if msg.get("ok") is False:
            raise RuntimeError(f"baseline: {msg.get('error')} (log: {self.log_file})")
        return msg

    def _send(self, msg: dict) -> None:
        self.process.stdin.write(json.dumps(msg) + "\n")
        self.process.stdin.flush()

    def start(self, files: list[Path]) -> None:
        self._read()  # {"ready": true}: DeepFace, dlib and the predictor are loaded
        self._send({"cmd": "load", "files": [str(f) for f in files]})
        self._read()
        self._send({"cmd": "info"})
        self.info = {k: v for k, v in self._read().items() if k != "ok"}

    def run_pass(self, count: int, bar) -> PassResult:
        latencies, faces, errors = [None] * count, [None] * count, {}
        cpu0 = cpu_seconds(self.pid)
        self._send({"cmd": "pass"})
        while True:
            msg = self._read()
            if "i" not in msg:
                wall = msg["wall"]
                break
            i = msg["i"]
            if msg.get("error"):
                errors[i] = msg["error"]
            else:
                latencies[i] = msg["seconds"]
                faces[i] = [{"box": f["box"], "gender": f["gender"]} for f in msg["faces"]]
            bar.update(1)
        return PassResult(wall, latencies, faces, errors, cpu_seconds(self.pid) - cpu0)

    def pids(self) -> dict[str, int]:
        return {"baseline": self.pid}

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self._send({"cmd": "quit"})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


# The loop reports DeepFace's dominant_gender; the stack its label.
GENDER_NAMES = {common_pb2.GENDER_WOMAN: "Woman", common_pb2.GENDER_MAN: "Man"}


class StackUnderTest:
    """A LocalStack on free ports, and a client of its public API."""

    def __init__(self, label: str, models_dir: Path, workdir: Path, env: dict[str, str]):
        self.label, self.models_dir, self.workdir, self.env = label, models_dir, workdir, env
        self.stack = self._new_stack()
        self.channel = None
        self.stub = None

    def _new_stack(self):
        from faceanalysis.cli.stack import LocalStack

        shutil.rmtree(self.workdir, ignore_errors=True)  # Redis's AOF of an earlier run would be replayed
        return LocalStack(models_dir=self.models_dir, archive_dir=self.workdir / "archive", workdir=self.workdir,
                          random_ports=True, extra_env={"*": self.env})

    def start(self, timeout: float) -> None:
        from faceanalysis.cli.analyze import dial
        from faceanalysis.v1 import image_input_pb2_grpc

        for attempt in (1, 2):
            try:
                self.stack.start(timeout=timeout)
                break
            except RuntimeError as err:
                self.stack.stop()
                # A free port found by LocalStack can be taken by another program before the
                # service binds it: try once more on new ports.
                if attempt == 2 or "exited" not in str(err):
                    raise
                print(f"{self.label}: {err}; starting again on other ports", file=sys.stderr, flush=True)
                self.stack = self._new_stack()
            except BaseException:
                self.stack.stop()
                raise
        # The CLI's own channel: the services' channel options plus keepalive on idle calls.
        self.channel = dial(self.stack.target("image-input"))
        self.stub = image_input_pb2_grpc.FaceAnalysisStub(self.channel)

    def pids(self) -> dict[str, int]:
        pids = {name: self.stack.processes[name].pid for name in services.START_ORDER if name in self.stack.processes}
        if self.stack.redis and self.stack.redis.process:
            pids["redis"] = self.stack.redis.process.pid
        return pids

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.stack.processes.items() if p.poll() is not None}
        if self.stack.redis and self.stack.redis.process and self.stack.redis.process.poll() is not None:
            dead["redis"] = self.stack.redis.process.returncode
        if dead:
            raise RuntimeError(f"{self.label}: process(es) exited during the benchmark: {dead}; "
                               f"logs in {self.stack.log_dir}")

    def _cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def run_pass(self, images: list[bytes], concurrency: int, bar) -> PassResult:
        import grpc

        from faceanalysis.runtime import work
        from faceanalysis.v1 import image_input_pb2

        n = len(images)
        latencies, faces, errors = [None] * n, [None] * n, {}
        shed = [0]
        lock = threading.Lock()
        order = iter(range(n))
        options = common_pb2.AnalysisOptions(skip_cache=True)  # analysed every round; stored as usual

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                request = image_input_pb2.AnalyzeImageRequest(image=images[i], options=options)
                start = time.perf_counter()
                for attempt in range(SHED_TRIES):
                    try:
                        reply = self.stub.AnalyzeImage(request, timeout=600)
                    except grpc.RpcError as err:
                        if work.is_overloaded(err) and attempt + 1 < SHED_TRIES:
                            with lock:
                                shed[0] += 1
                            time.sleep(min(SHED_BACKOFF_MAX, SHED_BACKOFF * 2 ** attempt) * rng.uniform(0.5, 1.5))
                            continue
                        errors[i] = f"{err.code().name}: {err.details()}"
                        break
                    latencies[i] = time.perf_counter() - start
                    faces[i] = [{"box": [f.box.x, f.box.y, f.box.width, f.box.height],
                                 "gender": GENDER_NAMES.get(f.gender.label, "")} for f in reply.result.faces]
                    break
                bar.update(1)

        threads = [threading.Thread(target=worker, args=(k,), name=f"bench-client-{k}")
                   for k in range(max(1, min(concurrency, n)))]
        cpu0, client0 = self._cpu(), _own_cpu()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        cpu = {name: seconds - cpu0[name] for name, seconds in self._cpu().items()}
        return PassResult(wall, latencies, faces, errors, sum(cpu.values()), _own_cpu() - client0, shed[0], cpu)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.stack.stop()


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Arm:
    name: str
    runner: object  # Baseline or StackUnderTest
    concurrency: int = 1
    passes: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "loop" if isinstance(self.runner, Baseline) else "stack"

    def run(self, images: list[bytes], desc: str) -> PassResult:
        with tqdm(total=len(images), desc=desc, unit="photo", leave=False, dynamic_ncols=True) as bar:
            if isinstance(self.runner, Baseline):
                return self.runner.run_pass(len(images), bar)
            return self.runner.run_pass(images, self.concurrency, bar)
