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
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from faceanalysis import models
from faceanalysis.runtime import cpu, memory, metrics
from faceanalysis.runtime.logging import log

logger = logging.getLogger(__name__)

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_FILES = {
    "Age": "age_model_weights.onnx",
    "Gender": "gender_model_weights.onnx",
    "Emotion": "facial_expression_model_weights.onnx",
}
INPUT_SIZE = (224, 224)
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


def age_interval(distribution: np.ndarray) -> tuple[float, float]:
    p = np.clip(distribution, 0, None)
    total = p.sum()
    if total <= 0:
        return 0.0, 100.0
    cdf = np.cumsum(p / total)
    low = float(np.searchsorted(cdf, AGE_INTERVAL[0]))
    high = float(np.searchsorted(cdf, AGE_INTERVAL[1]))
    return low, min(high, len(p) - 1.0)


def session_options(threads: int):
    """ONNX Runtime options for a container with `threads` CPUs: one pool of that size, no
    inter-op parallelism, no spin-waiting (idle threads sleep instead of burning the quota), and
    no arena that only grows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The arena keeps the peak of every batch shape it has seen and never gives it back, and the
    # memory pattern caches a plan per shape: with batches of 1..N faces RSS creeps up for hours.
    # Without them each run allocates through malloc, which the service trims when idle.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only, as DeepFace does
    return options


def model_session(model_path: Path, threads: int, int8: bool = False):
    """A session on `model_path` sized to `threads` CPUs, on the providers DeepFace would pick
    (DEEPFACE_ONNX_PROVIDERS, else CUDA when present, then CPU)."""
    import onnxruntime as ort
    from deepface.commons import onnx_utils

    options = session_options(threads)
    if not int8:
        # Prepacking copies every fp32 weight into a second layout at load: a 540 MB VGG peaked at
        # 940 MB to load. Without it, weights saved as external data are mapped from the file
        # (clean pages the kernel can reclaim) and inference measured as fast. int8 keeps it: its
        # kernels want their weights packed.
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(model_path), sess_options=options,
                                providers=onnx_utils.resolve_providers(ort.get_available_providers()))


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

    img = face_bgr.astype(np.float64)
    if img.max() > 1:
        img = img / 255
    return preprocessing.resize_image(img=img, target_size=INPUT_SIZE)[0]


def run_models(clients: dict, batch: np.ndarray, observe: bool = True) -> dict[str, np.ndarray]:
    """Each model's raw output for a (n, 224, 224, 3) batch, through DeepFace's client code: the
    age session is fed the batch as it is, gender and emotion go through their clients' predict
    (emotion's turns each face into a 48x48 gray image first)."""
    from deepface.commons import onnx_utils

    n = len(batch)
    timed = metrics.observe_inference if observe else (lambda *_: contextlib.nullcontext())
    with timed("age", n):
        ages = np.atleast_2d(onnx_utils.run_session(clients["Age"].model, batch))
    with timed("gender", n):
        genders = np.atleast_2d(clients["Gender"].predict(batch))
    with timed("emotion", n):
        emotions = np.atleast_2d(clients["Emotion"].predict(batch))
    return {"Age": ages, "Gender": genders, "Emotion": emotions}


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


def session_inputs(batch: np.ndarray) -> dict[str, np.ndarray]:
    """The exact tensor each model's session receives when Predictor.predict runs on `batch`
    (name as in MODEL_FILES -> array). DeepFace's own clients make them, with recording stand-ins
    for their sessions, so no model is loaded."""
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


def parse_int8_models(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """FACEANALYSIS_INT8_MODELS ("age,emotion") to model names as in MODEL_FILES (("Age", "Emotion"))."""
    from faceanalysis.models.quantize import check_names

    wanted = check_names(value) if value else ()
    return tuple(name for name in MODEL_FILES if name.lower() in wanted)


class Predictor:
    def __init__(self, models_dir: Path, cpus: int | None = None, int8_models: str | Iterable[str] = ""):
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
        from deepface.commons import onnx_utils

        self._run_session = onnx_utils.run_session
        self.clients = {}
        for name in MODEL_FILES:
            start = time.perf_counter()
            self.clients[name] = deepface_client(name, model_session(paths[name], self.threads, name in self.int8))
            # The load's transient copies (the protobuf, unpacked tensors) go back to the OS
            # before the next model loads, so start-up peaks at one model's load, not all three.
            memory.release()
            metrics.MODEL_LOAD.labels(name.lower()).set(time.perf_counter() - start)
        log(logger, logging.INFO, "attribute models loaded", models=list(MODEL_FILES), threads=self.threads,
            providers=self.clients["Age"].model.get_providers(), spinning=False,
            precision={n.lower(): "int8" if n in self.int8 else "fp32" for n in MODEL_FILES},
            files={n.lower(): p.name for n, p in paths.items()})

    @property
    def model_infos(self) -> list[tuple[str, str, str]]:
        """(name, task, file) per model; file is the one served, so an int8 result says so."""
        return [(f"deepface_{n.lower()}", n.lower(), self.paths[n].name) for n in MODEL_FILES]

    def prepare(self, face_bgr: np.ndarray) -> np.ndarray:
        """One face (uint8 BGR) to DeepFace's model input: (224, 224, 3) float32 in [0, 1]."""
        return prepare_face(face_bgr)

    def predict(self, batch: np.ndarray) -> list[Attributes]:
        """Age, gender and emotion for a (n, 224, 224, 3) batch, in one inference per model."""
        raw = run_models(self.clients, batch)
        out = []
        for age_dist, gender, emotion in zip(raw["Age"], raw["Gender"], raw["Emotion"]):
            low, high = age_interval(age_dist)
            years = age_years(age_dist)
            out.append(Attributes(years, min(low, years), max(high, years), woman_probability(gender),
                                  emotion_scores(emotion)))
        return out
