"""int8 copies of the attribute models (age, gender, emotion), and how well they agree with fp32.

`quantize_models` writes `<stem>.int8.onnx` beside each fp32 DeepFace file: ONNX Runtime static
quantization in QDQ format, int8 weights per output channel, activation ranges calibrated on real
faces. The calibration faces are the tensors the service feeds its sessions: each photo goes
through face-landmark's `Landmarker.analyze` (detection, 68 points, aligned 448 px crop), then
face-attributes' `cut_face` with each model's own margin (its weights' metadata, as the service
reads it; FACEANALYSIS_FACE_MARGIN overrides it) and `prepare_face`, then DeepFace's own client
code (`predictor.session_inputs`), which for emotion means its 48x48 gray conversion.

Each int8 copy inherits its fp32 file's preprocessing: it is written into the copy's ONNX metadata
(`faceanalysis.preprocessing`, with the fp32 file's sha256) and, in a models directory, into its
models.lock.json entry.

`agreement` runs the fp32 and int8 sessions on the same faces and compares what the service would
answer: gender label, age in years, dominant emotion.

The face-attributes service serves the int8 copies of the models named in
FACEANALYSIS_INT8_MODELS (see face_attributes/predictor.py).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from faceanalysis import models

logger = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"
NAMES = ("age", "gender", "emotion")
# Model name here -> name in predictor.MODEL_FILES and DeepFace.
_DEEPFACE_NAMES = {"age": "Age", "gender": "Gender", "emotion": "Emotion"}
# Photos whose longest side is below this are padded (black, as the aligned crop's own border) onto
# a canvas twice their size before detection: a tight face chip fills the frame, and YuNet finds no
# face that touches every edge. Larger photos with no face found get the same second try.
PAD_BELOW = 400
BATCH = 8  # faces per batch through DeepFace's client code and the agreement sessions
CALIBRATION_BATCH = 4  # small: a VGG's activations for 4 faces are a few hundred MB
FOLLOWERS = ("Relu", "MaxPool")
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm", *FOLLOWERS)
# Between the input and the first convolutions: ops after which the tensor is still the photo (a
# layout change, a normalisation, a resize).
PIXEL_PASSTHROUGH = ("Transpose", "Reshape", "Identity", "Cast", "Mul", "Add", "Sub", "Div", "Resize", "Pad")
# Above this the fp32 model cannot go through protobuf in one piece (2 GiB limit), so the
# calibration copy and the int8 output keep their weights in external data. A VGG-Face model
# (~540 MB fp32, ~140 MB int8) stays below it and its int8 copy is a single file.
EXTERNAL_DATA_BYTES = 1536 * 1024 * 1024
# MatMul and Gemm nodes are quantized when their weight has at least this many elements.
MIN_MATMUL_WEIGHTS = 65536


class QuantizeError(Exception):
    """A problem the user can fix: the message says how."""


def int8_path(fp32_path: Path) -> Path:
    """age_model_weights.onnx -> age_model_weights.int8.onnx, in the same folder."""
    fp32_path = Path(fp32_path)
    stem = fp32_path.name[: -len(".onnx")] if fp32_path.name.endswith(".onnx") else fp32_path.name
    return fp32_path.with_name(stem + INT8_SUFFIX)


def check_names(names: Iterable[str] | str) -> tuple[str, ...]:
    """Model names (a comma-separated string or an iterable) in canonical order; ValueError names
    any unknown one."""
    items = names.split(",") if isinstance(names, str) else list(names)
    wanted = {str(n).strip().lower() for n in items if str(n).strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown:
        raise ValueError(f"unknown attribute model(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if not wanted:
        raise ValueError(f"no attribute model named; choose from {', '.join(NAMES)}")
    return tuple(n for n in NAMES if n in wanted)


def fp32_path(weights_dir: Path, name: str) -> Path:
    """The fp32 file of a model; ModelMissing says to pull it."""
    from faceanalysis.face_attributes.predictor import MODEL_FILES

    path = Path(weights_dir) / MODEL_FILES[_DEEPFACE_NAMES[name]]
    if not path.is_file():
        raise models.ModelMissing(
            f"fp32 {name} model is missing: expected {path.resolve()}. Run `faceanalysis models pull --only "
            f"face-attributes` (set FACEANALYSIS_MODEL_MIRROR for air-gapped sites) before quantizing.")
    return path


def _progress(progress: bool, **kwargs):
    from tqdm import tqdm

    return tqdm(disable=not progress, dynamic_ncols=True, **kwargs)


def image_files(folder: Path) -> list[Path]:
    from faceanalysis.cli.analyze import IMAGE_SUFFIXES  # what `faceanalysis analyze` reads

    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{folder} is not a folder of photos")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise QuantizeError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def _pad(bgr: np.ndarray) -> np.ndarray:
    """The image in the middle of a black canvas twice its size."""
    import cv2

    h, w = bgr.shape[:2]
    top, left = h // 2, w // 2
    return cv2.copyMakeBorder(bgr, top, h - top, left, w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def _landmarker(models_dir: Path, settings):
    from faceanalysis.face_landmark.landmarker import Landmarker

    return Landmarker(models_dir, settings.detector, settings.detection_threshold, settings.crop_size,
                      settings.detection_max_side, settings.detection_min_face)


def model_margins(weights_dir: Path, names: Iterable[str] = NAMES, margin: float | None = None) -> dict[str, float]:
    """The face margin of each named model in `weights_dir`, as face-attributes would cut it: `margin`
    if given, else FACEANALYSIS_FACE_MARGIN if set (a WARNING where it differs from the weights'),
    else the model's own (models.lock.json, else the manifest entry its sha256 matches)."""
    from faceanalysis.face_attributes import predictor
    from faceanalysis.runtime import config

    names = check_names(names)
    if margin is not None:
        return {name: float(margin) for name in names}
    provs = {name: predictor.fp32_provenance(weights_dir, _DEEPFACE_NAMES[name]) for name in names
             if (Path(weights_dir) / predictor.MODEL_FILES[_DEEPFACE_NAMES[name]]).is_file()}
    own = {name: p.face_margin for name, p in provs.items()}
    override = config.load().face_margin
    files = {name: predictor.MODEL_FILES[_DEEPFACE_NAMES[name]] for name in own}
    return predictor.effective_margins(own, override, files,
                                       {n: f"from {p.preprocessing_from}" for n, p in provs.items()})


def _by_margin(margins: dict[str, float]) -> dict[float, tuple[str, ...]]:
    """margin -> the models cut at it (one group when all agree)."""
    groups: dict[float, list[str]] = {}
    for name, margin in margins.items():
        groups.setdefault(margin, []).append(name)
    return {m: tuple(names) for m, names in sorted(groups.items())}


def iter_faces(image_dir: Path, models_dir: Path, margin: float | None = None, limit: int | None = None,
               progress: bool = True, desc: str = "faces") -> Iterator[np.ndarray]:
    """Every face found in the photos under `image_dir` (at most `limit`), as face-attributes
    prepares it: (224, 224, 3) float32 BGR in [0, 1]. Detection, alignment and the crop use the
    configured face-landmark settings; `margin` defaults to the one margin the attribute models in
    `models_dir` want (ValueError when they want different ones: pass `margin`)."""
    from faceanalysis.face_attributes.predictor import cut_face, prepare_face
    from faceanalysis.runtime import config, imagecodec

    settings = config.load()
    if margin is None:
        margins = set(model_margins(Path(models_dir) / ".deepface" / "weights").values())
        if len(margins) != 1:
            raise ValueError(f"the attribute models in {models_dir} want different face margins "
                             f"({', '.join(f'{m:g}' for m in sorted(margins))}): pass one")
        (margin,) = margins
    files = image_files(image_dir)
    landmarker = _landmarker(models_dir, settings)
    limits = imagecodec.Limits.from_settings(settings)
    found = 0
    with _progress(progress, total=len(files), desc=desc, unit="image") as bar:
        for path in files:
            if limit is not None and found >= limit:
                break
            try:
                _, bgr = imagecodec.decode(path.read_bytes(), limits)
            except (imagecodec.InputError, OSError) as err:
                logger.warning("skipping %s: %s", path, getattr(err, "message", err))
                bar.update(1)
                continue
            small = max(bgr.shape[:2]) < PAD_BELOW
            faces = landmarker.analyze(_pad(bgr) if small else bgr)
            if not faces and not small:
                faces = landmarker.analyze(_pad(bgr))
            for face in faces:
                if limit is not None and found >= limit:
                    break
                # face_width and face_height travel between the services as float32.
                fw, fh = float(np.float32(face.face_width)), float(np.float32(face.face_height))
                yield prepare_face(cut_face(face.crop, fw, fh, margin))
                found += 1
            bar.update(1)
            bar.set_postfix(faces=found)


def _batches(faces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    chunk: list[np.ndarray] = []
    for face in faces:
        chunk.append(face)
        if len(chunk) == size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def _inherited(fp32: Path):
    """The fp32 file's provenance, and the ONNX metadata its int8 copy carries to inherit its
    preprocessing."""
    from faceanalysis.face_attributes.predictor import fp32_provenance
    from faceanalysis.models import provenance

    source = fp32_provenance(fp32.parent, _name_of(fp32))
    return source, {provenance.METADATA_PREPROCESSING: json.dumps(source.preprocessing, sort_keys=True),
                    provenance.METADATA_SOURCE_SHA256: source.sha256}


def _record_int8(fp32: Path, out: Path, source) -> None:
    """In a models directory (<dir>/.deepface/weights), models.lock.json gets the int8 copy with
    the fp32 file's preprocessing."""
    from faceanalysis.face_attributes.predictor import models_root
    from faceanalysis.models import provenance

    root = models_root(fp32.parent)
    if root == fp32.parent:
        return  # a bare weights folder: the copy's ONNX metadata carries it
    provenance.update_record(root, [provenance.Provenance(
        path=provenance.relative(root, out), sha256=provenance.file_sha256(out), identity=provenance.INT8,
        description=f"int8 copy of {fp32.name} ({source.identity}: {source.description})",
        preprocessing=dict(source.preprocessing), preprocessing_from=f"{fp32.name} (int8 copy)",
        source="faceanalysis models quantize", derived_from={"path": source.path, "sha256": source.sha256})])


def _name_of(fp32: Path) -> str:
    """age_model_weights.onnx -> "Age" (the name in predictor.MODEL_FILES)."""
    from faceanalysis.face_attributes.predictor import MODEL_FILES

    return next(n for n, f in MODEL_FILES.items() if f == fp32.name)


def _models_dir_of(weights_dir: Path) -> Path:
    """<models_dir>/.deepface/weights -> <models_dir>, where the face-landmark models are."""
    weights_dir = Path(weights_dir)
    if weights_dir.name == "weights" and weights_dir.parent.name == ".deepface":
        return weights_dir.parent.parent
    from faceanalysis.runtime import config

    return config.load().models_dir


def _external_data_files(path: Path) -> list[Path]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return [path.parent / loc for loc in sorted(locations)]


def _model_bytes(path: Path) -> int:
    return path.stat().st_size + sum(p.stat().st_size for p in _external_data_files(path) if p.is_file())


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _prepare(fp32: Path, prepared: Path) -> list[str]:
    """Shape inference and ORT's basic graph optimizations (constant folding, redundant nodes
    removed), as ORT recommends before quantizing, into `prepared` (weights in external data, so the
    graph can be edited without loading them). Returns the names of the nodes to quantize.

    Symbolic shape inference is skipped: it is for transformers and needs sympy; these are CNNs."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True, save_as_external_data=True,
                      all_tensors_to_one_file=True, external_data_location=prepared.name + ".data")
    model = onnx.load(str(prepared), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    used = {n.name for n in model.graph.node}
    chosen: list[str] = []
    quantized_outputs: set[str] = set()
    pixels = {i.name for i in model.graph.input}  # tensors that are still the photo itself
    for i, node in enumerate(model.graph.node):
        if not node.name:  # the quantizer selects nodes by name
            node.name = f"{node.op_type}_{i}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)
        # int8 where it pays: every convolution, and the matrix products with large weights (VGG's
        # fully connected layers). Small dense heads (SSR-Net's stage-wise age regression, a
        # classifier's last layer into two classes) stay fp32: they cost nothing, and quantizing
        # their outputs clips them to the range the calibration faces reached (calibrated on young
        # faces only, the stand-in age model was 8 years off on older ones (median); with this rule 1.5).
        #
        # The convolutions that read the photo's colour channels stay fp32 too: each output channel
        # has only 3 x k x k weights, so rounding them to 8 bits costs the most precision (stand-in
        # age model, calibrated on ../shared/images and compared on utkface-dev: median age
        # difference 1.39 -> 0.24 years, p95 3.09 -> 0.84), for under 1 % of a VGG's work.
        weight = max((sizes.get(name, 0) for name in node.input[1:2]), default=0)
        reads_pixels = bool(node.input) and node.input[0] in pixels
        if reads_pixels and node.op_type in PIXEL_PASSTHROUGH:
            pixels.update(node.output)  # still the photo: a layout change or a normalisation
        elif node.op_type == "Conv" and reads_pixels:
            pass
        elif node.op_type == "Conv" or (node.op_type in ("MatMul", "Gemm") and weight >= MIN_MATMUL_WEIGHTS):
            chosen.append(node.name)
            quantized_outputs.update(node.output)
        # A Relu or max pool right after a quantized node goes int8 too: the quantizer folds the
        # Relu into the output's range and ORT runs the pool on uint8, instead of dequantizing and
        # quantizing again around each (a VGG block: 11.5 -> 9.3 ms).
        elif node.op_type in FOLLOWERS and node.input and node.input[0] in quantized_outputs:
            chosen.append(node.name)
            quantized_outputs.update(node.output)
    onnx.save(model, str(prepared))  # the graph only; the weights stay in prepared's data file
    return chosen


def _calibrate(prepared: Path, tensors: np.ndarray, cache: Path, external: bool, progress: bool, desc: str) -> None:
    """Activation ranges of every tensor the quantizer may touch, over `tensors` (what the model's
    session is fed), saved as an ONNX Runtime calibration cache.

    Calibrating apart from quantize_static (which then reads the cache) means the calibration
    session and the quantizer's copy of the model are never in memory together. MinMax keeps one
    min and max per tensor and batch (the calibration graph reduces inside ONNX Runtime), so memory
    does not grow with the faces; small batches keep a VGG's activations small. (Not
    CalibMaxIntermediateOutputs: in ORT 1.31 it drops the batches it should merge.)"""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator, save_tensors_data

    input_name = _input_name(prepared)

    class Reader(CalibrationDataReader):
        def __init__(self, bar):
            self.start, self.bar = 0, bar

        def get_next(self):
            if self.start >= len(tensors):
                return None
            chunk = tensors[self.start : self.start + CALIBRATION_BATCH]
            self.start += len(chunk)
            self.bar.update(len(chunk))
            return {input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    calibrator = create_calibrator(prepared, QUANTIZED_OP_TYPES,
                                   augmented_model_path=str(prepared.with_name("augmented.onnx")),
                                   calibrate_method=CalibrationMethod.MinMax, use_external_data_format=external)
    with _progress(progress, total=len(tensors), desc=desc, unit="face") as bar:
        calibrator.collect_data(Reader(bar))
    save_tensors_data(calibrator.compute_data(), cache)


def _quantize_one(fp32: Path, out: Path, tensors: np.ndarray, progress: bool, desc: str,
                  metadata: dict[str, str] | None = None) -> None:
    """Static QDQ quantization of one model, calibrated on `tensors` (what its session is fed)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    external = _model_bytes(fp32) >= EXTERNAL_DATA_BYTES
    # Work files stay beside the weights (same file system: the result is moved into place, never
    # half-written under its final name) and go when done.
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out.parent) as tmp:
        tmp_dir = Path(tmp)
        prepared = tmp_dir / "prepared.onnx"
        nodes = _prepare(fp32, prepared)
        cache = tmp_dir / "calibration.json"
        _calibrate(prepared, tensors, cache, external, progress, desc)
        written = tmp_dir / out.name
        quantize_static(
            str(prepared), str(written), None,
            calibration_cache_path=str(cache),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            nodes_to_quantize=nodes,
            # uint8 activations with int8 weights (U8S8): ONNX Runtime's x86 int8 GEMM kernels
            # (MLAS) are U8S8 kernels, built on VPDPBUSD (AVX512-VNNI / AVX-VNNI) and AMX's
            # TDPBUSD, which multiply unsigned 8-bit activations by signed 8-bit weights. int8
            # activations (S8S8) get their sign bit flipped into uint8 while being packed, an
            # extra pass that buys nothing (on a Sapphire Rapids core the two timed the same).
            # Asymmetric uint8 also spends its whole range on the post-ReLU activations, which are
            # never negative.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # reduce_range (7-bit weights) only avoids the 16-bit intermediate saturation of
            # VPMADDUBSW on CPUs without VNNI; with VNNI the full 8 bits are safe.
            reduce_range=False,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=external,
        )
        model = onnx.load(str(written), load_external_data=False)
        _add_metadata(model, {
            "quantized_from": fp32.name,
            "quantization": "onnxruntime quantize_static QDQ, weights int8 per channel, activations uint8, "
                            "MinMax calibration",
            "calibration_faces": str(len(tensors)),
            **(metadata or {}),
        })
        onnx.save(model, str(written))  # the graph only: any external weights stay in their data file
        for data in _external_data_files(written):
            os.replace(data, out.parent / data.name)
        os.replace(written, out)


def _add_metadata(model, items: dict[str, str]) -> None:
    for key, value in items.items():
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value
                break
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value


def _calibration_tensors(calibration_dir: Path, models_dir: Path, names: tuple[str, ...], limit: int,
                         margins: dict[str, float], progress: bool) -> dict[str, np.ndarray]:
    from faceanalysis.face_attributes.predictor import session_inputs

    fed: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for margin, group in _by_margin({n: margins[n] for n in names}).items():
        faces = iter_faces(calibration_dir, models_dir, margin=margin, limit=limit, progress=progress,
                           desc=f"calibration faces (margin {margin:g})")
        for batch in _batches(faces, BATCH):
            inputs = session_inputs(batch)
            if np.array_equal(inputs["Gender"], inputs["Age"]):
                inputs["Gender"] = inputs["Age"]  # one copy in memory for the two
            for name in group:
                fed[name].append(inputs[_DEEPFACE_NAMES[name]])
    if not fed[names[0]]:
        count = len(image_files(calibration_dir))
        raise QuantizeError(f"no faces found in the {count} photo(s) under {calibration_dir}: calibration needs "
                            f"photos of faces (any photos; small ones are padded before detection)")
    return {name: np.concatenate(parts) for name, parts in fed.items()}


def quantize_models(weights_dir: Path, calibration_dir: Path, names=NAMES, limit: int = 100,
                    progress: bool = True, *, models_dir: Path | None = None,
                    margin: float | None = None) -> dict[str, Path]:
    """Write <weights_dir>/<stem>.int8.onnx for each named model, calibrated on faces found in the
    images under calibration_dir (at most `limit` faces). Returns name -> written path.

    The faces are found with the face-landmark models in `models_dir` (default: the models dir that
    holds `weights_dir`) and cut with `margin` (default: each model's own, see model_margins). Each
    int8 copy inherits its fp32 file's preprocessing (_record_int8)."""
    weights_dir = Path(weights_dir)
    names = check_names(names)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    sources = {name: fp32_path(weights_dir, name) for name in names}
    if importlib.util.find_spec("onnx") is None:
        raise QuantizeError("quantizing needs the onnx package: pip install onnx==1.23.2")
    margins = model_margins(weights_dir, names, margin)
    tensors = _calibration_tensors(calibration_dir, models_dir or _models_dir_of(weights_dir), names, limit,
                                   margins, progress)
    written = {}
    for name in names:
        start = time.perf_counter()
        out = int8_path(sources[name])
        source, inherited = _inherited(sources[name])
        _quantize_one(sources[name], out, tensors[name], progress, desc=f"calibrating {name}", metadata=inherited)
        _record_int8(sources[name], out, source)
        logger.info("wrote %s (%d calibration faces) in %.1f s", out, len(tensors[name]), time.perf_counter() - start)
        written[name] = out
    return written


def _session(path: Path, threads: int, int8: bool = False):
    """A session built as face-attributes builds it to serve the model, so agreement measures
    what is served."""
    from faceanalysis.face_attributes.predictor import model_session

    return model_session(path, threads, int8)


def agreement(weights_dir: Path, eval_dir: Path, names=NAMES, progress: bool = True, *,
              models_dir: Path | None = None, margin: float | None = None, limit: int | None = None) -> dict:
    """fp32 vs int8 on the faces in eval_dir (each model's face cut at its own margin, or `margin`):
    gender agreement (fraction), median and p95 absolute age difference in years, dominant-emotion
    agreement (fraction), faces compared.

    Keys: faces, and per model named: gender_agreement; age_median_abs_diff and
    age_p95_abs_diff (years); emotion_agreement. `limit` caps the faces compared."""
    from faceanalysis.face_attributes.predictor import age_years, emotion_scores, session_inputs, woman_probability
    from faceanalysis.runtime import cpu

    weights_dir = Path(weights_dir)
    names = check_names(names)
    threads = cpu.available_cpus()
    sessions = {}
    for name in names:
        fp32 = fp32_path(weights_dir, name)
        quantized = int8_path(fp32)
        if not quantized.is_file():
            raise models.ModelMissing(f"int8 {name} model is missing: expected {quantized.resolve()}. Run "
                                      f"`faceanalysis models quantize --calibration DIR` first.")
        sessions[name] = (_session(fp32, threads), _session(quantized, threads, int8=True))

    def run(session, tensor):
        return np.atleast_2d(session.run(None, {session.get_inputs()[0].name: tensor})[0])

    # What the service answers from each model's output.
    answers = {
        "age": lambda out: np.array([age_years(row) for row in out]),
        "gender": lambda out: np.array([woman_probability(row) >= 0.5 for row in out]),
        "emotion": lambda out: np.array([int(np.argmax(emotion_scores(row))) for row in out]),
    }
    results: dict[str, list[np.ndarray]] = {name: [] for name in names}
    counts = []
    for group_margin, group in _by_margin(model_margins(weights_dir, names, margin)).items():
        count = 0
        faces = iter_faces(eval_dir, models_dir or _models_dir_of(weights_dir), margin=group_margin, limit=limit,
                           progress=progress, desc="comparing fp32 and int8")
        for batch in _batches(faces, BATCH):
            inputs = session_inputs(batch)
            for name in group:
                tensor = inputs[_DEEPFACE_NAMES[name]]
                fp32_session, int8_session = sessions[name]
                ours = answers[name](run(fp32_session, tensor)), answers[name](run(int8_session, tensor))
                results[name].append(np.abs(ours[0] - ours[1]) if name == "age" else ours[0] == ours[1])
            count += len(batch)
        counts.append(count)
    count = min(counts)
    if count == 0:
        raise QuantizeError(f"no faces found in the photos under {eval_dir}; nothing to compare")
    out: dict = {"faces": count}
    if "gender" in names:
        out["gender_agreement"] = float(np.mean(np.concatenate(results["gender"])))
    if "age" in names:
        diffs = np.concatenate(results["age"])
        out["age_median_abs_diff"] = float(np.median(diffs))
        out["age_p95_abs_diff"] = float(np.percentile(diffs, 95))
    if "emotion" in names:
        out["emotion_agreement"] = float(np.mean(np.concatenate(results["emotion"])))
    return out


def format_agreement(result: dict) -> str:
    """The agreement table the CLI prints."""
    rows = [("faces compared", f"{result['faces']}")]
    if "gender_agreement" in result:
        rows.append(("gender agreement", f"{result['gender_agreement']:.1%}"))
    if "age_median_abs_diff" in result:
        rows.append(("age |fp32 - int8|, median", f"{result['age_median_abs_diff']:.2f} years"))
        rows.append(("age |fp32 - int8|, p95", f"{result['age_p95_abs_diff']:.2f} years"))
    if "emotion_agreement" in result:
        rows.append(("dominant emotion agreement", f"{result['emotion_agreement']:.1%}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
