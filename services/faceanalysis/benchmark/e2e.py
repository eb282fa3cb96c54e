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
over the stack's processes, also shown per process; the benchmark's own gRPC client is reported
apart) and each process's peak RSS (VmHWM: start-up included, so a stack that loads its fp32 models before the
int8 copies shows the fp32 peak). It also checks that both found the same faces (box IoU >= 0.5)
and genders, and lists where they did not.

With --vgg the age and gender models are VGG-16 networks with random weights and DeepFace's
contract (benchmark/vgg.py): the cost of DeepFace's official models, in a temporary models
folder that both arms use. Without it the models are those in the models folder (on these
machines: the small stand-ins from the mirror, ~1000x cheaper than DeepFace's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceanalysis import models
from faceanalysis.benchmark.agreement import agreement
from faceanalysis.benchmark.arms import Arm, Baseline, PassResult, StackUnderTest
from faceanalysis.benchmark.procs import MiB, machine, peak_rss_mib
from faceanalysis.benchmark.report import ratios, report_text, summarize
from faceanalysis.runtime import services

REPO = Path(__file__).resolve().parents[3]
INT8_MODELS = ("age", "gender")


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


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run(args) -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the stacks and the loop are stopped
    # on the way out instead of outliving the benchmark.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(args)
    except RuntimeError as err:  # a process that would not start or died: say which, and where its log is
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


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
