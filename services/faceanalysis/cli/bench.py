"""`faceanalysis bench`: what micro-batching buys in face-attributes, as a ratio.

Both arms run in the same process on the same inputs, so machine noise hits them alike:
- baseline: one inference per face and model (what a per-face loop around DeepFace does);
- batched: the same faces in batches of --batch (what the service does).
By default it times the models in the models directory. With --vgg it builds models with the
architecture of DeepFace's official age and gender networks (VGG-16 body, ~15.5 GMAC per face)
and random weights, because the stand-in models in the shared mirror cost ~1000x less and say
nothing about production speed.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_model(path: Path, classes: int, seed: int) -> Path:
    """A VGG-16 with DeepFace's contract: float32 (n, 224, 224, 3) BGR in [0, 1] -> (n, classes) softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    nodes.append(helper.make_node("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2]))
    current, channels, n = "x0", 3, 0
    for layer in VGG16:
        n += 1
        if layer == "M":
            nodes.append(helper.make_node("MaxPool", [current], [f"p{n}"], kernel_shape=[2, 2], strides=[2, 2]))
            current = f"p{n}"
            continue
        w = (rng.standard_normal((layer, channels, 3, 3)) * np.sqrt(2 / (9 * channels))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{n}"), numpy_helper.from_array(np.zeros(layer, np.float32), f"b{n}")]
        nodes.append(helper.make_node("Conv", [current, f"w{n}", f"b{n}"], [f"c{n}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{n}"], [f"r{n}"]))
        current, channels = f"r{n}", layer
    nodes.append(helper.make_node("Flatten", [current], ["flat"]))
    width = 512 * 7 * 7
    for i, out in enumerate([4096, 4096, classes]):
        w = (rng.standard_normal((width, out)) * np.sqrt(1 / width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fw{i}"), numpy_helper.from_array(np.zeros(out, np.float32), f"fb{i}")]
        src = "flat" if i == 0 else f"fr{i - 1}"
        nodes.append(helper.make_node("Gemm", [src, f"fw{i}", f"fb{i}"], [f"f{i}"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"f{i}"], [f"fr{i}"]))
        width = out
    nodes.append(helper.make_node("Softmax", ["f2"], ["output"], axis=1))
    graph = helper.make_graph(
        nodes, "vgg16_face_standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 224, 224, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what ONNX Runtime 1.31 loads; the onnx package would write a newer one
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    return path


def _sessions(args) -> dict:
    import onnxruntime as ort

    if args.vgg:
        tmp = Path(tempfile.mkdtemp(prefix="faceanalysis-bench-"))
        print("building VGG-16 age (101 classes) and gender (2 classes) models with random weights ...")
        files = {"age (VGG-16)": vgg_model(tmp / "age.onnx", 101, 1), "gender (VGG-16)": vgg_model(tmp / "gender.onnx", 2, 2)}
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
    sessions = _sessions(args)
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
