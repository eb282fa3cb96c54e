"""`faceanalysis bench`: the whole stack against the loop a user would write instead.

Two arms on the same photos, the same weight files and the same machine, in the same run:

- loop: for each photo `DeepFace.analyze(img, actions=["age", "gender", "emotion"],
  detector_backend="yunet", enforce_detection=False, expand_percentage=100 * margin)` (margin: the
  attribute models' own, from their metadata, as the stack reads it), then dlib's
  68-point predictor (shape_predictor_68_face_landmarks.dat, the stack's file) on each face found.
  It runs in a process of its own (benchmark/baseline.py), with DEEPFACE_HOME pointing at the
  stack's weight files and DEEPFACE_BACKEND_ENGINE=onnx (no TensorFlow is imported).
- stack: Redis and the four services started by `LocalStack` on free ports, driven through the
  public API: unary AnalyzeImage calls (skip_cache, results stored as usual) from a pool of 1 and
  of --concurrency threads. With --int8 (on by default with --vgg) a second stack serves int8 age
  and gender models (FACEANALYSIS_INT8_MODELS=age,gender), quantized for the run.

Each process gets one untimed pass first (the loop; each stack at its highest concurrency),
then --rounds rounds in which each arm analyses every photo once; the order of the arms rotates
from round to round, so drift (other work on the machine, thermal state) hits every arm alike.
Figures are the median over rounds, with the spread (min-max). Measured per arm: photos and
faces per second, latency per photo (loop: decode + analyse + landmarks of one photo; stack: one
AnalyzeImage call as its client sees it, retries after load shedding included), CPU seconds per
photo (utime + stime from /proc/PID/stat over the timed passes: the baseline process, or the sum
over the stack's processes; the benchmark's own gRPC client is reported apart) and each
process's peak RSS (VmHWM: start-up included, so a stack that loads its fp32 models before the
int8 copies shows the fp32 peak). It also checks that both found the same faces (box IoU >= 0.5)
and genders, and lists where they did not.

With --vgg the age and gender models are VGG-16 networks with random weights and DeepFace's
contract (benchmark/vgg.py): the cost of DeepFace's official models, in a temporary models
folder that both arms use. Without it the models are those in the models folder (on these
machines: the small stand-ins from the mirror, ~1000x cheaper than DeepFace's).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceanalysis import models
from faceanalysis.face_landmark.detectors import box_iou
from faceanalysis.runtime import services
from faceanalysis.v1 import common_pb2

REPO = Path(__file__).resolve().parents[3]
INT8_MODELS = ("age", "gender")
IOU_MATCH = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024
# A photo the stack sheds (RESOURCE_EXHAUSTED, "overloaded": more in flight than the default
# FACEANALYSIS_MAX_CONCURRENT_IMAGES) is sent again after this backoff, as a real client does.
SHED_BACKOFF, SHED_BACKOFF_MAX, SHED_TRIES = 0.02, 0.5, 200


# --- processes -------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


# Distributions whose versions describe the run (the first one installed of each list).
VERSIONS = {"onnxruntime": ("onnxruntime",),
            "opencv": ("opencv-contrib-python-headless", "opencv-python-headless", "opencv-python"),
            "deepface": ("deepface",), "dlib": ("dlib-bin", "dlib"), "grpcio": ("grpcio",), "numpy": ("numpy",)}
# CPU features that decide how fast ONNX Runtime's fp32 and int8 kernels are.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict:
    from faceanalysis.runtime import cpu

    info = {"cpu": "unknown", "cpu_flags": [], "logical_cpus": os.cpu_count(), "cpus_available": cpu.available_cpus()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and info["cpu"] == "unknown":
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["memory_gib"] = round(int(mem[1]) / MiB, 1)
        info["load_average_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    info["versions"] = {"python": sys.version.split()[0], **{k: _version(v) for k, v in VERSIONS.items()}}
    return info


# --- what one pass measured -------------------------------------------------------------------
@dataclass
class PassResult:
    wall: float
    latencies: list  # seconds per photo, None where it failed
    faces: list  # per photo: [{"box": [x, y, w, h], "gender": "Man" | "Woman"}], None where it failed
    errors: dict  # photo index -> message
    cpu: float  # CPU seconds of the arm's processes during the pass
    client_cpu: float = 0.0  # CPU seconds of this process (the gRPC client) during the pass
    shed: int = 0  # answers "overloaded, send again"

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

    def _cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids().values())

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
        return PassResult(wall, latencies, faces, errors, self._cpu() - cpu0, _own_cpu() - client0, shed[0])

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


# --- models -----------------------------------------------------------------------------------
def check_models(models_dir: Path) -> None:
    try:
        for entry in models.manifest().files:
            models.locate(models_dir, entry.name)
    except models.ModelMissing as err:
        raise SystemExit(f"error: {err}\n(`make models` pulls them into FACEANALYSIS_MODELS_DIR, default models/)")


def linked_models_dir(source: Path, dest: Path) -> Path:
    """A models folder whose files are symlinks to `source`'s: ours to add files to (VGG models,
    int8 copies) without touching the user's folder."""
    from faceanalysis.models.provenance import RECORD_FILE

    for entry in models.manifest().files:
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(entry.location(source).resolve())
    if (source / RECORD_FILE).is_file():  # what each file is and needs (a mirror's override included)
        shutil.copyfile(source / RECORD_FILE, dest / RECORD_FILE)
    return dest


def attribute_margins(models_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Each attribute model's own face margin in `models_dir` (as face-attributes reads it), and where
    it comes from."""
    from faceanalysis.face_attributes.predictor import MODEL_FILES, fp32_provenance

    weights = Path(models_dir) / ".deepface" / "weights"
    provs = {name.lower(): fp32_provenance(weights, name) for name in MODEL_FILES}
    return ({n: p.face_margin for n, p in provs.items()},
            {n: f"{p.identity}: {p.description} (from {p.preprocessing_from})" for n, p in provs.items()})


def record_vgg(models_dir: Path, replaced: dict) -> None:
    """The VGG files take the preprocessing of the files they replace (benchmark/vgg.py: random
    weights with DeepFace's architecture), so both arms cut faces as they would with those."""
    from faceanalysis.models import provenance

    weights = Path(models_dir) / ".deepface" / "weights"
    provenance.update_record(models_dir, [provenance.Provenance(
        path=provenance.relative(models_dir, weights / file), sha256=provenance.file_sha256(weights / file),
        identity="benchmark", description="VGG-16-cost random weights (faceanalysis bench --vgg)",
        preprocessing=dict(before.preprocessing),
        preprocessing_from=f"the file it replaces ({before.identity}: {before.description})")
        for file, before in replaced.items()])


def deepface_home(models_dir: Path, dest: Path) -> Path:
    """A DEEPFACE_HOME for the loop: symlinks to the very files the stack loads. DeepFace reads
    every weight, YuNet included, from <home>/.deepface/weights; our models folder keeps YuNet at
    its top. ONNX Runtime finds a model's external data (`<file>.data`, the VGG models) beside the
    path it was given, so those are linked too."""
    from faceanalysis.face_landmark.landmarker import YUNET_FILE

    weights = dest / ".deepface" / "weights"
    shutil.rmtree(dest, ignore_errors=True)
    weights.mkdir(parents=True)
    for f in sorted((models_dir / ".deepface" / "weights").iterdir()):
        if f.is_file() and not f.name.startswith("."):
            (weights / f.name).symlink_to(f.resolve())
    (weights / YUNET_FILE).symlink_to(models.locate(models_dir, YUNET_FILE).resolve())
    return dest


def describe_models(models_dir: Path, vgg: bool, mirror: str | None) -> str:
    from faceanalysis.face_attributes.predictor import MODEL_FILES
    from faceanalysis.models.pull import parse_sums, sha256_of

    weights = models_dir / ".deepface" / "weights"
    age = weights / MODEL_FILES["Age"]
    emotion = weights / MODEL_FILES["Emotion"]

    def kind(path: Path) -> str:
        size = path.stat().st_size
        if mirror and Path(mirror).is_dir() and (Path(mirror) / "SHA256SUMS").is_file() and size < 64 * MiB:
            sums = parse_sums((Path(mirror) / "SHA256SUMS").read_text())
            if sums.get(path.name) == sha256_of(path):
                return "stand-ins from the mirror"
        if size < 64 * MiB:
            return f"small models ({size / 1024:.0f} KiB; not DeepFace's official VGG-Face ones)"
        return f"DeepFace-format models ({size / MiB:.0f} MiB)"

    if vgg:
        return (f"age and gender: VGG-16-cost random weights (DeepFace's architecture and contract, ~15.5 GMAC "
                f"per face each); emotion: {kind(emotion)}")
    what = kind(age)
    if what.startswith("stand-ins"):
        what += (" (SSR-Net age and gender, mini-Xception emotion; ~1000x cheaper than DeepFace's VGG-Face "
                 "models, so these speeds say nothing about production: see `--vgg`)")
    return what


def require_quantizer() -> None:
    """Fail early and clearly where the quantizer is not there."""
    try:
        from faceanalysis.models.quantize import int8_path, quantize_models  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"error: the int8 arm needs faceanalysis.models.quantize (quantize_models, int8_path), "
                         f"which cannot be imported ({err}); run without it (--no-int8)") from None


def quantize(weights_dir: Path, calibration: Path, names=INT8_MODELS) -> None:
    """int8 copies of `names` beside their fp32 files (<stem>.int8.onnx, where face-attributes
    looks for them when FACEANALYSIS_INT8_MODELS names them), in a process of its own:
    calibrating a VGG model takes GBs that the benchmark would otherwise keep."""
    from faceanalysis.models.quantize import int8_path

    code = ("import sys; from pathlib import Path; from faceanalysis.models.quantize import quantize_models; "
            "quantize_models(Path(sys.argv[1]), Path(sys.argv[2]), names=tuple(sys.argv[3].split(',')), "
            "limit=100, progress=True)")
    done = subprocess.run([sys.executable, "-c", code, str(weights_dir), str(calibration), ",".join(names)])
    if done.returncode != 0:
        raise SystemExit(f"error: quantizing {', '.join(names)} failed (exit {done.returncode}); see above")
    from faceanalysis.face_attributes.predictor import MODEL_FILES

    missing = [str(int8_path(weights_dir / MODEL_FILES[n.capitalize()])) for n in names
               if not int8_path(weights_dir / MODEL_FILES[n.capitalize()]).is_file()]
    if missing:
        raise SystemExit(f"error: quantizing wrote no {', '.join(missing)}")


# --- agreement --------------------------------------------------------------------------------
def match(loop_faces: list[dict], stack_faces: list[dict]) -> list[tuple[int, int, float]]:
    """Pairs (loop index, stack index, IoU) with IoU >= IOU_MATCH, best first, each face used once."""
    pairs = sorted(((box_iou(a["box"], b["box"]), i, j) for i, a in enumerate(loop_faces)
                    for j, b in enumerate(stack_faces)), reverse=True)
    used_a, used_b, out = set(), set(), []
    for score, i, j in pairs:
        if score < IOU_MATCH:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j, score))
    return out


def agreement(names: list[str], loop: PassResult, stack: PassResult) -> dict:
    """Per photo: the same number of faces? Faces matched by box; the same gender on each match?
    The table names what differs; the boxes (x, y, w, h) are in the JSON."""
    same_count = matched = same_gender = 0
    disagreements, per_image = [], []
    for k, name in enumerate(names):
        a, b = loop.faces[k], stack.faces[k]
        per_image.append({"image": name, "loop_faces": None if a is None else len(a),
                          "stack_faces": None if b is None else len(b)})
        if a is None or b is None:
            disagreements.append({"image": name, "problem": "not analysed by " +
                                  " and ".join(n for n, r in (("the loop", a), ("the stack", b)) if r is None)})
            continue
        pairs = match(a, b)
        same_count += len(a) == len(b)
        matched += len(pairs)
        only_loop = [a[i]["box"] for i in range(len(a)) if i not in {p[0] for p in pairs}]
        only_stack = [b[j]["box"] for j in range(len(b)) if j not in {p[1] for p in pairs}]
        genders = [{"loop_box": a[i]["box"], "stack_box": b[j]["box"], "loop": a[i]["gender"], "stack": b[j]["gender"]}
                   for i, j, _ in pairs if a[i]["gender"] != b[j]["gender"]]
        same_gender += len(pairs) - len(genders)
        problems = []
        if len(a) != len(b):
            problems.append(f"{plural(len(a), 'face')} in the loop, {len(b)} in the stack")
        if only_loop:
            problems.append(f"{len(only_loop)} found only by the loop")
        if only_stack:
            problems.append(f"{len(only_stack)} found only by the stack")
        if genders:
            problems.append("gender differs on " + ", ".join(
                f"the face at x={g['stack_box'][0]} (loop {g['loop']}, stack {g['stack'] or '?'})" for g in genders))
        if problems:
            disagreements.append({"image": name, "loop_faces": len(a), "stack_faces": len(b),
                                  "problem": "; ".join(problems), "only_loop": only_loop, "only_stack": only_stack,
                                  "gender_differs": genders})
    return {"images": len(names), "same_face_count": same_count, "loop_faces": loop.face_count,
            "stack_faces": stack.face_count, "matched_faces": matched, "same_gender": same_gender,
            "disagreements": disagreements, "per_image": per_image}


# --- statistics and report ----------------------------------------------------------------------
def spread(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}


def percentiles_ms(result: PassResult) -> dict[str, float]:
    ms = [1000 * s for s in result.latencies if s is not None]
    if not ms:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(arm: Arm, images: int) -> dict:
    passes = arm.passes
    pct = [percentiles_ms(p) for p in passes]
    out = {
        "kind": arm.kind, "concurrency": arm.concurrency, "images": images,
        "analysed": [p.analysed for p in passes],
        "faces": [p.face_count for p in passes],
        "images_per_s": spread([p.analysed / p.wall for p in passes]),
        "faces_per_s": spread([p.face_count / p.wall for p in passes]),
        "latency_ms": {q: spread([x[q] for x in pct]) for q in ("p50", "p90", "p99")},
        "cpu_s_per_image": spread([p.cpu / max(1, p.analysed) for p in passes]),
        "failures": sorted({f"{i}: {e}" for p in passes for i, e in p.errors.items()}),
    }
    if arm.kind == "stack":
        out["client_cpu_s_per_image"] = spread([p.client_cpu / max(1, p.analysed) for p in passes])
        out["shed_and_sent_again"] = sum(p.shed for p in passes)
    return out


def fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_spread(s: dict, suffix: str = "") -> str:
    if s["min"] == s["max"]:
        return f"{fmt(s['median'])}{suffix}"
    return f"{fmt(s['median'])}{suffix} ({fmt(s['min'])}–{fmt(s['max'])})"


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table, padded so that it also reads well in a terminal. `align` has one letter
    per column, l or r; by default the first column is left-aligned and the others right."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ratios(arms: list[Arm]) -> dict:
    loop = next(a for a in arms if a.kind == "loop")
    stacks = [a for a in arms if a.kind == "stack"]
    out: dict = {"images_per_s": {}, "p99_over_p50": {}}
    for arm in stacks:
        out["images_per_s"][f"{arm.name} / loop"] = spread(
            [_div(s.analysed / s.wall, b.analysed / b.wall) for s, b in zip(arm.passes, loop.passes)])

    def tail(p: PassResult) -> float:
        q = percentiles_ms(p)
        return _div(q["p99"], q["p50"])

    loop_tail = [tail(p) for p in loop.passes]
    out["p99_over_p50"]["loop"] = spread(loop_tail)
    top = max(a.concurrency for a in stacks)
    for arm in stacks:
        if arm.concurrency == top:
            values = [tail(p) for p in arm.passes]
            out["p99_over_p50"][arm.name] = spread(values)
            out["p99_over_p50"][f"{arm.name} / loop"] = spread([_div(s, b) for s, b in zip(values, loop_tail)])
    return out


def _div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) else math.nan


def report_text(result: dict) -> str:
    m = result["machine"]
    v = m["versions"]
    base = result.get("baseline_runtime", {})
    lines = [
        "## faceanalysis bench: the stack against the DeepFace loop",
        "",
        f"- machine: {m['cpu']} ({', '.join(m.get('cpu_flags') or ['no AVX2'])}), {m['logical_cpus']} logical CPUs "
        f"({m['cpus_available']} available to this run), "
        f"{m.get('memory_gib', '?')} GiB; load average {' '.join(m.get('load_average_at_start', []))} at the start, "
        f"{' '.join(m.get('load_average_at_end', []))} at the end",
        f"- software: Python {v.get('python')}, onnxruntime {v.get('onnxruntime')}, OpenCV {v.get('opencv')}, "
        f"DeepFace {v.get('deepface')}, dlib {v.get('dlib')}; the loop ran on DeepFace's {base.get('backend', '?')} "
        f"backend (TensorFlow imported: {'yes' if base.get('tensorflow_imported') else 'no'})",
        f"- models: {result['models']}",
        f"- photos: {result['config']['images']} ({result['config']['image_source']}), "
        f"{plural(result['config']['rounds'], 'round')} after one untimed pass per process (the loop, each stack), "
        f"arm order rotated each round; "
        f"face margin {result['config']['face_margin']:g}, the models' own from their metadata "
        f"(loop: expand_percentage={result['config']['expand_percentage']})",
        f"- figures: median over rounds (min–max); latency percentiles over the {result['config']['images']} photos "
        f"of a pass; CPU s/photo from /proc utime+stime (stack: its 4 services and Redis)",
        "",
    ]
    rows = []
    for name, arm in result["arms"].items():
        lat = arm["latency_ms"]
        rows.append([name, fmt_spread(arm["images_per_s"]), fmt_spread(arm["faces_per_s"]), fmt_spread(lat["p50"]),
                     fmt_spread(lat["p90"]), fmt_spread(lat["p99"]), fmt_spread(arm["cpu_s_per_image"])])
    lines += [table(["arm", "photos/s", "faces/s", "p50 ms", "p90 ms", "p99 ms", "CPU s/photo"], rows), ""]

    rrows = [[f"photos/s, {k}", fmt_spread(s, "x")] for k, s in result["ratios"]["images_per_s"].items()]
    rrows += [[f"p99/p50, {k}", fmt_spread(s, "x")] for k, s in result["ratios"]["p99_over_p50"].items()]
    lines += [table(["ratio", "median (min–max)"], rrows), ""]

    mrows = []
    for group, procs in result["peak_rss_mib"].items():
        for proc, mib in procs.items():
            mrows.append([group, proc, f"{mib:.0f}"])
    lines += [table(["arm", "process", "peak RSS MiB"], mrows, "llr"), ""]

    notes = []
    for name, arm in result["arms"].items():
        if arm["kind"] == "stack":
            notes.append(f"{name}: client (this process) {fmt(arm['client_cpu_s_per_image']['median'])} CPU s/photo; "
                         f"{arm['shed_and_sent_again']} calls shed (server busy) and sent again")
        missing = [a for a in arm["analysed"] if a != arm["images"]]
        if missing or arm["failures"]:
            notes.append(f"{name}: analysed {arm['analysed']} of {arm['images']} photos per round; "
                         f"failures: {'; '.join(arm['failures'][:5])}")
    lines += [f"- {n}" for n in notes] + [""]

    for name, ag in result["agreement"].items():
        lines.append(f"Agreement of {name} with the loop: same face count on {ag['same_face_count']} of "
                     f"{ag['images']} photos ({ag['loop_faces']} faces in the loop, {ag['stack_faces']} in the stack); "
                     f"{ag['matched_faces']} faces matched (box IoU >= {IOU_MATCH}), same gender on "
                     f"{ag['same_gender']} of them.")
        if ag["disagreements"]:
            rows = [[d["image"], d["problem"]] for d in ag["disagreements"]]
            lines += ["", table(["photo", "disagreement"], rows, "ll")]
            if ag["stack_faces"] > ag["loop_faces"]:
                lines += ["", "(DeepFace pads a photo with a black border half its size on every side and its "
                              "YuNet wrapper shrinks the result to 640 px: it sees the photo at 320 px at most and "
                              "misses small faces.)"]
        lines.append("")
    took = result.get("seconds", {})
    if took:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in took.items() if k != "total")
        lines.append(f"Took {took['total']:.0f} s ({parts}).")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------
def default_folder(relative: str, option: str) -> Path:
    for candidate in (Path.cwd() / ".." / relative, REPO.parent / relative):
        if candidate.is_dir():
            return candidate.resolve()
    raise SystemExit(f"error: ../{relative} does not exist here; pass {option}")


def collect_images(paths: list[str] | None) -> tuple[list[Path], str]:
    from faceanalysis.cli.analyze import collect

    if paths:
        files, source = collect(paths), " ".join(paths)
    else:
        folder = default_folder("shared/images", "--images DIR_OR_FILES")
        files, source = collect([str(folder)]), str(folder)
    if not files:
        raise SystemExit(f"error: no photos in {source}")
    return files, source


def display_names(files: list[Path]) -> list[str]:
    if len(files) == 1:
        return [files[0].name]
    root = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    return [str(f.resolve().relative_to(root)) for f in files]


def prepare_models(user_models: Path, scratch: Path, vgg: bool, calibration: Path | None, timings: dict) -> Path:
    """The models folder both arms use: the user's own, or (for --vgg or int8) a temporary one
    of symlinks to the user's files in which the VGG models and int8 copies are written."""
    if not vgg and calibration is None:
        return user_models
    models_dir = linked_models_dir(user_models, scratch)
    if vgg:
        from faceanalysis.benchmark.vgg import VGG_MODELS, write_vgg_weights
        from faceanalysis.face_attributes.predictor import fp32_provenance

        print("building VGG-16 age (101 classes) and gender (2 classes) models with random weights ...",
              file=sys.stderr, flush=True)
        start = time.monotonic()
        weights = models_dir / ".deepface" / "weights"
        replaced = {file: fp32_provenance(weights, name.capitalize()) for name, (file, _) in VGG_MODELS.items()}
        write_vgg_weights(weights)
        record_vgg(models_dir, replaced)
        timings["build VGG models"] = time.monotonic() - start
    if calibration is not None:
        print(f"quantizing {' and '.join(INT8_MODELS)} to int8, calibrated on {calibration} ...",
              file=sys.stderr, flush=True)
        start = time.monotonic()
        quantize(models_dir / ".deepface" / "weights", calibration)
        timings["quantize"] = time.monotonic() - start
    return models_dir


def measure(arms: list[Arm], images: list[bytes], rounds: int, stacks: list[StackUnderTest]) -> dict[str, PassResult]:
    """One untimed pass per process first (the loop; each stack at its highest concurrency):
    models built, thread pools, sessions and caches warm. Then `rounds` rounds of every arm, the
    order rotated by one each round. Returns the warm-up passes, per runner label."""
    warm: dict[str, PassResult] = {}
    for arm in sorted(arms, key=lambda a: -a.concurrency):
        if arm.runner.label not in warm:
            warm[arm.runner.label] = arm.run(images, f"warm-up {arm.name}")
    for r in range(rounds):
        k = r % len(arms)
        for arm in arms[k:] + arms[:k]:
            arm.passes.append(arm.run(images, f"round {r + 1}/{rounds} {arm.name}"))
        for s in stacks:
            s.check_alive()
    return warm


def run(args) -> int:
    try:
        return _run(args)
    except RuntimeError as err:  # a process that would not start or died: say which, and where its log is
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from faceanalysis.face_landmark.landmarker import PREDICTOR_FILE
    from faceanalysis.runtime import config

    settings = config.load()
    if args.rounds < 1 or args.concurrency < 1:
        raise SystemExit("error: --rounds and --concurrency must be at least 1")
    files, source = collect_images(args.images)
    names = display_names(files)
    user_models = settings.models_dir.resolve()
    check_models(user_models)
    int8 = args.vgg if args.int8 is None else args.int8
    calibration = None
    if int8:
        calibration = Path(args.calibration) if args.calibration else default_folder("shared/eval/utkface-dev",
                                                                                      "--calibration DIR")
        if not calibration.is_dir():
            raise SystemExit(f"error: calibration folder {calibration} does not exist; pass --calibration DIR "
                             f"(photos with faces) or --no-int8")
        require_quantizer()
    if settings.face_margin is not None:
        print(f"note: FACEANALYSIS_FACE_MARGIN={settings.face_margin:g} is ignored: both arms use the models' own "
              f"face margins, from their metadata", file=sys.stderr)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.monotonic()
    timings: dict[str, float] = {}

    scratch = Path(tempfile.mkdtemp(prefix="faceanalysis-bench-models-"))
    runners: list = []
    try:
        models_dir = prepare_models(user_models, scratch, args.vgg, calibration, timings)
        models_text = describe_models(models_dir, args.vgg, settings.model_mirror)
        # The margin both arms use: the models' own (the stack reads the same metadata). The loop's
        # DeepFace.analyze takes one expand_percentage for all three models.
        margins, margin_origins = attribute_margins(models_dir)
        margin = margins["age"]
        if len(set(margins.values())) > 1:
            print(f"warning: the attribute models want different face margins ({margins}); the loop cuts every "
                  f"face at the age model's {margin:g}", file=sys.stderr)
        expand_percentage = int(round(100 * margin))  # see baseline.py: margin m == expand_percentage 100 m
        start = time.monotonic()
        baseline = Baseline(deepface_home(models_dir, workdir / "deepface-home"),
                            models.locate(models_dir, PREDICTOR_FILE).resolve(), expand_percentage,
                            workdir / "baseline.log")
        runners.append(baseline)
        # No margin override and no int8 unless asked (the user's environment may carry
        # FACEANALYSIS_FACE_MARGIN or FACEANALYSIS_INT8_MODELS): the stack cuts at the models' own margins.
        env = {"FACEANALYSIS_FACE_MARGIN": "", "FACEANALYSIS_LOG_LEVEL": "WARNING", "FACEANALYSIS_INT8_MODELS": ""}
        stacks = [StackUnderTest("stack", models_dir, workdir / "stack", env)]
        if int8:
            stacks.append(StackUnderTest("stack int8", models_dir, workdir / "stack-int8",
                                         {**env, "FACEANALYSIS_INT8_MODELS": ",".join(INT8_MODELS)}))
        for s in stacks:
            print(f"starting {s.label}: Redis and {len(services.SERVICES)} services (logs in {s.stack.log_dir}) ...",
                  file=sys.stderr, flush=True)
            runners.append(s)
            s.start(timeout=600 if args.vgg else 180)
        baseline.start(files)
        timings["start the stacks and the loop"] = time.monotonic() - start

        images = [f.read_bytes() for f in files]
        levels = [1] if args.concurrency == 1 else [1, args.concurrency]
        arms = [Arm("loop", baseline)] + [Arm(f"{s.label} c={c}", s, c) for s in stacks for c in levels]
        start = time.monotonic()
        warm = measure(arms, images, args.rounds, stacks)
        timings["warm-up and rounds"] = time.monotonic() - start

        info["load_average_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        rss = {"loop": {"baseline": peak_rss_mib(baseline.pid)}}
        for s in stacks:
            procs = {name: peak_rss_mib(pid) for name, pid in s.pids().items()}
            procs["total (sum of peaks)"] = sum(procs.values())
            rss[s.label] = procs
        result = {
            "machine": info,
            "baseline_runtime": baseline.info,
            "models": models_text,
            "config": {"images": len(files), "image_source": source, "image_names": names, "rounds": args.rounds,
                       "concurrency": args.concurrency, "face_margin": margin, "face_margins": margins,
                       "face_margin_source": margin_origins, "expand_percentage": expand_percentage,
                       "models_dir": str(user_models), "vgg": args.vgg, "int8": bool(int8),
                       "int8_models": list(INT8_MODELS) if int8 else [],
                       "calibration": str(calibration) if calibration else None},
            "arms": {arm.name: summarize(arm, len(files)) for arm in arms},
            "ratios": ratios(arms),
            "peak_rss_mib": rss,
            "agreement": {s.label: agreement(names, warm["loop"], warm[s.label]) for s in stacks},
        }
    finally:
        for runner in reversed(runners):
            try:
                runner.stop()
            except Exception as err:  # keep stopping the others
                print(f"stopping {runner.label}: {err}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
    result["seconds"] = {"total": time.monotonic() - started, **timings}

    print(report_text(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    complete = all(a == len(files) for arm in result["arms"].values() for a in arm["analysed"])
    return 0 if complete else 1
