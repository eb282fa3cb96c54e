"""`faceanalysis bench batching`: what micro-batching buys in face-attributes, as a ratio.

Both arms run in the same process on the same inputs, so machine noise hits them alike:
- one by one: one inference per face and model (what a per-face loop around DeepFace does);
- batched: the same faces in batches of --batch (what the service does).
By default it times the models in the models directory. With --vgg it builds models with the
architecture of DeepFace's official age and gender networks (VGG-16 body, ~15.5 GMAC per face)
and random weights (benchmark/vgg.py), because the stand-in models in the shared mirror cost
~1000x less and say nothing about production speed.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceanalysis.benchmark.vgg import vgg_model


def _sessions(args, tmp: Path) -> dict:
    import onnxruntime as ort

    if args.vgg:
        print("building VGG-16 age (101 classes) and gender (2 classes) models with random weights ...")
        files = {"age (VGG-16)": vgg_model(tmp / "age.onnx", 101, 1),
                 "gender (VGG-16)": vgg_model(tmp / "gender.onnx", 2, 2)}
    else:
        from faceanalysis.face_attributes.predictor import MODEL_FILES
        from faceanalysis.runtime import config

        weights = config.load().models_dir / ".deepface" / "weights"
        files = {name.lower(): weights / f for name, f in MODEL_FILES.items()}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"missing model files: {', '.join(missing)}; run `faceanalysis models pull`")
    return {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in files.items()}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def run(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="faceanalysis-bench-"))
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the VGG models are ~540 MB each


def _run(args, tmp: Path) -> int:
    sessions = _sessions(args, tmp)
    faces = args.faces if not args.vgg else min(args.faces, 16)
    report = {"models": "VGG-16 random weights (production-sized)" if args.vgg else "models directory",
              "faces": faces, "batch": args.batch, "results": {}}
    for name, session in tqdm(sessions.items(), desc="models", unit="model"):
        inp = session.get_inputs()[0]
        shape = [faces] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        data = np.random.default_rng(0).random(shape, dtype=np.float32)

        def one_by_one():
            for i in range(faces):
                session.run(None, {inp.name: data[i : i + 1]})

        def batched():
            for i in range(0, faces, args.batch):
                session.run(None, {inp.name: data[i : i + args.batch]})

        base = _time(one_by_one, args.repeats)
        fast = _time(batched, args.repeats)
        report["results"][name] = {"one_by_one_ms_per_face": round(1000 * base / faces, 3),
                                   "batched_ms_per_face": round(1000 * fast / faces, 3),
                                   "speedup": round(base / fast, 2)}
    print(json.dumps(report, indent=2))
    return 0
