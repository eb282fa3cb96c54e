"""Models with the cost of DeepFace's official age and gender networks, for timing only.

DeepFace's age and gender models are VGG-Face networks: a VGG-16 body (about 15.5 GMAC per face at
224x224) with a small head. The stand-ins in the shared model mirror cost about 1000 times less, so
a speed figure measured with them says nothing about production. `vgg_model` builds a VGG-16 with
DeepFace's input/output contract and random weights: right cost, meaningless answers.

The weights (about 540 MB per model) go to ONNX external data, `<file name>.data` beside the
model. ONNX Runtime resolves that location relative to the folder of the model file it is given,
so DeepFace's loader (`onnx_utils.build_session`, on `$DEEPFACE_HOME/.deepface/weights/<file>`) and
our Predictor (`models.locate` in the models dir) both find it, as long as the `.data` file sits
beside the `.onnx` file, a symlink beside a symlink included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


# DeepFace's file names and class counts for the two VGG-Face based models.
VGG_MODELS = {"age": ("age_model_weights.onnx", 101), "gender": ("gender_model_weights.onnx", 2)}


def write_vgg_weights(weights_dir: Path) -> dict[str, Path]:
    """Replace age_model_weights.onnx and gender_model_weights.onnx in a DeepFace weights folder
    (`<models dir>/.deepface/weights`) by VGG-16 models with random weights; returns name -> path.
    A symlink in their place is removed first, so the file it points to is never written."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (name, (file_name, classes)) in enumerate(VGG_MODELS.items(), start=1):
        path = weights_dir / file_name
        for old in (path, path.with_name(path.name + ".data")):
            if old.is_symlink() or old.exists():
                old.unlink()
        written[name] = vgg_model(path, classes, seed)
    return written
