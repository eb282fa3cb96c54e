"""DeepFace's age, gender and emotion models, run on whole batches of faces.

We call DeepFace's own model clients and preprocessing (`resize_image`), so a face gets the
same numbers here as through `DeepFace.analyze`; only the batching is ours.

One thing we change: the ONNX Runtime sessions. DeepFace builds them with default options,
which size the intra-op thread pool to the node's cores and let idle threads spin-wait. In a
pod whose CPU limit is below the node's core count that burns the quota (and gets throttled).
So we make DeepFace's client objects without their constructor (which would load each model
into a default session first: twice a 540 MB VGG in memory at start-up) and give each one our
own session on the same model file and providers: `cpus` intra-op threads, sequential execution,
spinning off. The graph and DeepFace's predict and preprocessing code stay the same, so the
numbers do not change.

int8: for each model named in `int8_models` (FACEANALYSIS_INT8_MODELS) that session is built on
the statically quantized copy `faceanalysis models quantize` wrote beside the fp32 file
(models/quantize.py); DeepFace's client code around it is unchanged.

Each model's face is cut with that model's own margin: what its weights want, from the models
directory's record (models.lock.json, written by `models pull`) or, without one, from the manifest
entry its sha256 matches (models/provenance.py). DeepFace's official weights want 0, the stand-ins
of ../shared/models 0.4. FACEANALYSIS_FACE_MARGIN, when set, overrides every model's margin, and a
WARNING names both values wherever they differ. Models that agree share one cut; otherwise a batch
carries one cut per distinct margin (shape (n, groups, 224, 224, 3)) and each model reads its own.

A call may ask for some of the attributes only (PredictAttributesRequest.tasks): `Predictor.run`
runs only the models of the tasks it is given, so an emotion-only call never pays for (nor shows
in the inference metrics of) the age and gender models.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from faceanalysis import models
from faceanalysis.models import provenance
from faceanalysis.runtime import cpu, memory, metrics, onnx
from faceanalysis.runtime.logging import log
from faceanalysis.runtime.options import ATTRIBUTE_TASKS

logger = logging.getLogger(__name__)

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_FILES = {
    "Age": "age_model_weights.onnx",
    "Gender": "gender_model_weights.onnx",
    "Emotion": "facial_expression_model_weights.onnx",
}
INPUT_SIZE = (224, 224)
# The preprocessing this service (with DeepFace's client code) applies besides the margin: a
# model file whose recorded preprocessing asks for anything else is refused at load.
SUPPORTED_PREPROCESSING = {"input_size": list(INPUT_SIZE), "color_order": "BGR", "pixel_range": [0, 1]}
# The age interval covers the central 80 % of the model's age distribution.
AGE_INTERVAL = (0.1, 0.9)


@dataclass
class Attributes:
    age: float
    age_low: float
    age_high: float
    woman: float  # P(woman); P(man) = 1 - woman
    emotions: np.ndarray  # 7 probabilities, EMOTIONS order, summing to 1


def cut_face(crop: np.ndarray, face_width: float, face_height: float, margin: float) -> np.ndarray:
    """The face box plus `margin` (a fraction of its size), cut from the middle of an aligned crop."""
    height, width = crop.shape[:2]
    w = min(float(width), face_width * (1 + margin))
    h = min(float(height), face_height * (1 + margin))
    x0 = int(round((width - w) / 2))
    y0 = int(round((height - h) / 2))
    return crop[y0 : y0 + max(1, int(round(h))), x0 : x0 + max(1, int(round(w)))]


def face_size(margin: float) -> int:
    """The longer side, in pixels, that a face box needs in its crop for the cut at `margin` to
    fill the model's input: crops with larger faces are shrunk by face-landmark before they are
    sent (DetectFacesRequest.face_size), since resize_image would shrink them here anyway."""
    return math.ceil(max(INPUT_SIZE) / (1 + margin))


def age_interval(distribution: np.ndarray) -> tuple[float, float]:
    p = np.clip(distribution, 0, None)
    total = p.sum()
    if total <= 0:
        return 0.0, 100.0
    cdf = np.cumsum(p / total)
    low = float(np.searchsorted(cdf, AGE_INTERVAL[0]))
    high = float(np.searchsorted(cdf, AGE_INTERVAL[1]))
    return low, min(high, len(p) - 1.0)


def model_session(model_path: Path, threads: int, int8: bool = False):
    """A session on `model_path` sized to `threads` CPUs, on the providers DeepFace would pick
    (DEEPFACE_ONNX_PROVIDERS, else CUDA when present, then CPU)."""
    import onnxruntime as ort
    from deepface.commons import onnx_utils

    options = onnx.session_options(threads)
    if not int8:
        # Prepacking copies every fp32 weight into a second layout at load: a 540 MB VGG peaked at
        # 940 MB to load. Without it, weights saved as external data are mapped from the file
        # (clean pages the kernel can reclaim) and inference measured as fast. int8 keeps it: its
        # kernels want their weights packed.
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(model_path), sess_options=options,
                                providers=onnx_utils.resolve_providers(ort.get_available_providers()),
                                disabled_optimizers=onnx.disabled_optimizers(int8))


def deepface_client(name: str, session):
    """DeepFace's own client object for model `name` (as in MODEL_FILES) around `session`, made
    without its constructor, which would load the model into a default session first."""
    from deepface.modules import modeling

    cls = modeling.get_model_class(task="facial_attribute", model_name=name)
    client = cls.__new__(cls)
    client.model_name = name
    client.model = session
    return client


def prepare_face(face_bgr: np.ndarray) -> np.ndarray:
    """One face (uint8 BGR) to DeepFace's model input: (224, 224, 3) float32 in [0, 1]."""
    from deepface.modules import preprocessing

    # float32, not the float64 of DeepFace.analyze's own pipeline: the model input is float32
    # anyway, the values differ by under 2e-7, and a 300 px face took 0.25 ms instead of 1.9.
    img = face_bgr.astype(np.float32)
    if img.max() > 1:
        img /= 255
    return preprocessing.resize_image(img=img, target_size=INPUT_SIZE)[0]


def run_models(clients: dict, batch: np.ndarray | dict[str, np.ndarray], observe: bool = True,
               names: Iterable[str] = tuple(MODEL_FILES)) -> dict[str, np.ndarray]:
    """The raw output of each model in `names` (default: all) for a (n, 224, 224, 3) batch (or one
    such batch per model name), through DeepFace's client code: the age session is fed the batch as
    it is, gender and emotion go through their clients' predict (emotion's turns each face into a
    48x48 gray image first). Only those models run, and only they are counted in the metrics."""
    from deepface.commons import onnx_utils

    names = [name for name in MODEL_FILES if name in set(names)]
    inputs = batch if isinstance(batch, dict) else {name: batch for name in names}
    timed = metrics.observe_inference if observe else (lambda *_: contextlib.nullcontext())
    out = {}
    for name in names:
        with timed(name.lower(), len(inputs[name])):
            if name == "Age":  # the distribution, not the client's expectation: the interval needs it
                out[name] = np.atleast_2d(onnx_utils.run_session(clients[name].model, inputs[name]))
            else:
                out[name] = np.atleast_2d(clients[name].predict(inputs[name]))
    return out


class _RecordingSession:
    """Takes an ONNX Runtime session's place in a DeepFace client and keeps what it is fed."""

    def __init__(self):
        self.fed: list[np.ndarray] = []

    def get_inputs(self):
        return [SimpleNamespace(name="input")]

    def run(self, output_names, feed, *args, **kwargs):
        (value,) = feed.values()
        self.fed.append(value)
        return [np.zeros((len(value), 1), np.float32)]  # read by nothing we keep


def session_inputs(batch: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exact tensor each model's session receives when Predictor.predict runs on `batch` (one
    (n, 224, 224, 3) array for every model, or one per model name) (name as in MODEL_FILES ->
    array). DeepFace's own clients make them, with recording stand-ins for their sessions, so no
    model is loaded."""
    os.environ["DEEPFACE_BACKEND_ENGINE"] = "onnx"
    clients = {name: deepface_client(name, _RecordingSession()) for name in MODEL_FILES}
    run_models(clients, batch, observe=False)
    return {name: np.concatenate(client.model.fed) for name, client in clients.items()}


def age_years(distribution: np.ndarray) -> float:
    """The age model's 101-bin distribution to years (its expectation)."""
    return float(np.sum(distribution * np.arange(len(distribution))))


def woman_probability(gender: np.ndarray) -> float:
    return float(np.clip(gender[0], 0, 1))


def emotion_scores(emotion: np.ndarray) -> np.ndarray:
    total = float(emotion.sum())
    scores = emotion / total if total > 0 else np.full(len(EMOTIONS), 1 / len(EMOTIONS))
    return scores.astype(np.float64)


def models_root(weights_dir: Path) -> Path:
    """<models_dir>/.deepface/weights -> <models_dir> (where models.lock.json is); any other folder
    stands for itself."""
    weights_dir = Path(weights_dir)
    if weights_dir.name == "weights" and weights_dir.parent.name == ".deepface":
        return weights_dir.parent.parent
    return weights_dir


def fp32_provenance(weights_dir: Path, name: str, record: dict | None = None) -> provenance.Provenance:
    """What the fp32 file of model `name` (as in MODEL_FILES) in `weights_dir` is and needs."""
    file = MODEL_FILES[name]
    return provenance.resolve(models_root(weights_dir), Path(weights_dir) / file, models.manifest().get(file),
                              record=record)


def check_preprocessing(prov: provenance.Provenance, file: str) -> None:
    """UnsupportedPreprocessing when the weights ask for something other than what we feed them."""
    for key, value in SUPPORTED_PREPROCESSING.items():
        wanted = prov.preprocessing.get(key, value)
        if (list(wanted) if isinstance(wanted, (list, tuple)) else wanted) != value:
            raise models.UnsupportedPreprocessing(
                f"{file} (sha256 {prov.sha256[:12]}, preprocessing from {prov.preprocessing_from}) wants "
                f"{key}={json.dumps(wanted)}, but face-attributes feeds DeepFace's client {key}={json.dumps(value)}: "
                f"this service cannot serve these weights as they are")
    margin = prov.preprocessing.get("face_margin", 0.0)
    if not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise models.UnsupportedPreprocessing(
            f"{file} (preprocessing from {prov.preprocessing_from}): face_margin must be a number in [0, 1], "
            f"got {margin!r}")


def effective_margins(own: dict[str, float], override: float | None, files: dict[str, str],
                      origins: dict[str, str] | None = None) -> dict[str, float]:
    """Each model's margin: its own, or `override` (FACEANALYSIS_FACE_MARGIN) for all, with a
    WARNING for each model whose own margin it changes."""
    if override is None:
        return dict(own)
    for name, margin in own.items():
        if not math.isclose(margin, override, abs_tol=1e-9):
            origin = f" ({origins[name]})" if origins and name in origins else ""
            log(logger, logging.WARNING,
                f"FACEANALYSIS_FACE_MARGIN={override:g} overrides the face margin {margin:g} that "
                f"{files[name]}'s weights want{origin}", model=name.lower(), override=override, model_margin=margin)
    return {name: float(override) for name in own}


def margin_groups(margins: dict[str, float]) -> tuple[tuple[float, ...], dict[str, int]]:
    """The distinct margins, and for each model the index of its own among them."""
    distinct = tuple(sorted(set(margins.values())))
    return distinct, {name: distinct.index(m) for name, m in margins.items()}


def parse_int8_models(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """FACEANALYSIS_INT8_MODELS ("age,emotion") to model names as in MODEL_FILES (("Age", "Emotion"))."""
    from faceanalysis.models.quantize import check_names

    wanted = check_names(value) if value else ()
    return tuple(name for name in MODEL_FILES if name.lower() in wanted)


LARGE_WEIGHTS_BYTES = 100 * 1024 * 1024


class Predictor:
    def __init__(self, models_dir: Path, cpus: int | None = None, int8_models: str | Iterable[str] = "",
                 face_margin: float | None = None):
        """`face_margin`: FACEANALYSIS_FACE_MARGIN, an override of every model's own margin (None: each
        model's own, from its metadata)."""
        from faceanalysis.models.quantize import int8_path

        self.int8 = parse_int8_models(int8_models)
        # ModelMissing names the missing file and the fix.
        paths = {name: models.locate(models_dir, file) for name, file in MODEL_FILES.items()}
        for name in self.int8:
            quantized = int8_path(paths[name])
            if not quantized.is_file():
                raise models.ModelMissing(
                    f"int8 model {quantized.name} is missing: expected {quantized.resolve()}, because "
                    f"FACEANALYSIS_INT8_MODELS asks for int8 {name.lower()}. Run `faceanalysis models quantize "
                    f"--calibration DIR` (DIR: photos with faces) with FACEANALYSIS_MODELS_DIR={Path(models_dir)}, "
                    f"or take {name.lower()} out of FACEANALYSIS_INT8_MODELS.")
            paths[name] = quantized
        self.paths = paths
        self.threads = max(1, int(cpus if cpus is not None else cpu.available_cpus()))
        # DeepFace reads its weights from $DEEPFACE_HOME/.deepface/weights and must never try to
        # download while serving: every file was checked above.
        os.environ["DEEPFACE_HOME"] = str(Path(models_dir).resolve())
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "onnx"
        self.clients = {}
        for name in MODEL_FILES:
            start = time.perf_counter()
            self.clients[name] = deepface_client(name, model_session(paths[name], self.threads, name in self.int8))
            # The load's transient copies (the protobuf, unpacked tensors) go back to the OS
            # before the next model loads, so start-up peaks at one model's load, not all three.
            memory.release()
            metrics.MODEL_LOAD.labels(name.lower()).set(time.perf_counter() - start)
        # What each served file is and needs, hashed once here (never per call).
        self.provenance = self._resolve(Path(models_dir))
        own = {n: p.face_margin for n, p in self.provenance.items()}
        self.margins = effective_margins(own, face_margin, {n: p.name for n, p in paths.items()},
                                         {n: f"from {p.preprocessing_from}" for n, p in self.provenance.items()})
        self.groups, self.group_of = margin_groups(self.margins)
        log(logger, logging.INFO, "attribute models loaded", models=list(MODEL_FILES), threads=self.threads,
            providers=self.clients["Age"].model.get_providers(), spinning=False,
            precision={n.lower(): "int8" if n in self.int8 else "fp32" for n in MODEL_FILES},
            files={n.lower(): p.name for n, p in paths.items()},
            sha256={n.lower(): p.sha256 for n, p in self.provenance.items()},
            weights={n.lower(): f"{p.identity}: {p.description}" for n, p in self.provenance.items()},
            face_margin={n.lower(): m for n, m in self.margins.items()},
            margin_source="FACEANALYSIS_FACE_MARGIN" if face_margin is not None else "model metadata")

    def _resolve(self, models_dir: Path) -> dict[str, provenance.Provenance]:
        record = provenance.read_record(models_dir)
        out = {}
        for name, file in MODEL_FILES.items():
            entry = models.manifest().get(file)
            path = self.paths[name]
            if name not in self.int8:
                prov = provenance.resolve(models_dir, path, entry, record=record)
            else:
                meta = self.clients[name].model.get_modelmeta().custom_metadata_map
                prov = provenance.resolve(models_dir, path, None, metadata=meta, record=record)
                if prov.identity == models.UNKNOWN:  # neither recorded nor carrying its fp32 file's preprocessing
                    fp32 = provenance.resolve(models_dir, entry.location(models_dir), entry, record=record)
                    log(logger, logging.WARNING, f"{path.name} carries no preprocessing: using that of {file} beside "
                        f"it; quantize again with `faceanalysis models quantize` to record it", model=name.lower())
                    prov = replace(fp32, path=prov.path, sha256=prov.sha256, identity=provenance.INT8,
                                   description=f"int8 copy of {file}", preprocessing_from=f"{file} beside it",
                                   derived_from=None)
            check_preprocessing(prov, path.name)
            out[name] = prov
        return out

    def large_fp32_weights(self, threshold: int = LARGE_WEIGHTS_BYTES) -> bool:
        """Whether an fp32 model with over `threshold` bytes of weights (a VGG-Face age or gender
        model, ~540 MB; its weights may sit in an external .data file) is served: its activations
        are large enough for heap fragmentation to set the pod's peak."""
        for name, path in self.paths.items():
            if name in self.int8:
                continue
            weights = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.is_file())
            if weights > threshold:
                return True
        return False

    @property
    def model_infos(self) -> list[models.ServedModel]:
        """Per model: the file served (so an int8 result says so), its sha256, the preprocessing
        and settings that shape its answers (face margin, input size, colour order, pixel range,
        precision), and the face size it needs in a crop."""
        fed = {key: models.parameter(value) for key, value in SUPPORTED_PREPROCESSING.items()}
        return [models.ServedModel(
            f"deepface_{n.lower()}", n.lower(), self.paths[n].name, self.provenance[n].sha256,
            {"face_margin": models.parameter(self.margins[n]), **fed,
             "precision": "int8" if n in self.int8 else "fp32",
             "face_size": models.parameter(face_size(self.margins[n]))})
            for n in MODEL_FILES]

    def batch_shape(self, n: int) -> tuple[int, ...]:
        """The shape of a batch of n faces as prepare_crop's results stack."""
        return (n, *INPUT_SIZE, 3) if len(self.groups) == 1 else (n, len(self.groups), *INPUT_SIZE, 3)

    def prepare_crop(self, crop: np.ndarray, face_width: float, face_height: float) -> np.ndarray:
        """An aligned crop (uint8 BGR) to the models' input: the face cut at each distinct margin
        the models want, (224, 224, 3) float32 in [0, 1], or (groups, 224, 224, 3)."""
        faces = [prepare_face(cut_face(crop, face_width, face_height, m)) for m in self.groups]
        return faces[0] if len(faces) == 1 else np.stack(faces)

    def prepare(self, face_bgr: np.ndarray) -> np.ndarray:
        """One face (uint8 BGR), already cut, to DeepFace's model input: (224, 224, 3) float32 in [0, 1]."""
        return prepare_face(face_bgr)

    def inputs(self, batch: np.ndarray,
               names: Iterable[str] = tuple(MODEL_FILES)) -> np.ndarray | dict[str, np.ndarray]:
        """A (n, 224, 224, 3) batch goes to every model; a (n, groups, 224, 224, 3) one is split,
        each model in `names` reading the cut at its own margin."""
        if batch.ndim == 4:
            return batch
        return {name: np.ascontiguousarray(batch[:, self.group_of[name]]) for name in names}

    def run(self, batch: np.ndarray, tasks: Iterable[str] = ATTRIBUTE_TASKS) -> list[dict[str, object]]:
        """Per face of a (n, 224, 224, 3) batch (or (n, groups, 224, 224, 3), see prepare_crop), the
        answer of each task in `tasks`, one inference per model of those tasks only:
        "age": (years, low, high), "gender": P(woman), "emotion": 7 probabilities (EMOTIONS order)."""
        names = [name for name in MODEL_FILES if name.lower() in set(tasks)]
        raw = run_models(self.clients, self.inputs(batch, names), names=names)
        out: list[dict[str, object]] = [{} for _ in range(len(batch))]
        for face, dist in zip(out, raw.get("Age", ())):
            low, high = age_interval(dist)
            years = age_years(dist)
            face["age"] = (years, min(low, years), max(high, years))
        for face, gender in zip(out, raw.get("Gender", ())):
            face["gender"] = woman_probability(gender)
        for face, emotion in zip(out, raw.get("Emotion", ())):
            face["emotion"] = emotion_scores(emotion)
        return out

    def predict(self, batch: np.ndarray) -> list[Attributes]:
        """Age, gender and emotion for a (n, 224, 224, 3) batch (or (n, groups, 224, 224, 3), see
        prepare_crop), in one inference per model."""
        return [Attributes(*face["age"], face["gender"], face["emotion"]) for face in self.run(batch)]
