"""DeepFace's age, gender and emotion models, run on whole batches of faces.

We call DeepFace's own model clients and preprocessing (`resize_image`), so a face gets the
same numbers here as through `DeepFace.analyze`; only the batching is ours.

One thing we change: the ONNX Runtime sessions. DeepFace builds them with default options,
which size the intra-op thread pool to the node's cores and let idle threads spin-wait. In a
pod whose CPU limit is below the node's core count that burns the quota (and gets throttled).
So after DeepFace has built its clients we give each one a new session on the same model file
and providers, with `cpus` intra-op threads, sequential execution and spinning off. The graph
and DeepFace's predict and preprocessing code stay the same, so the numbers do not change.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceanalysis import models
from faceanalysis.runtime import cpu, metrics
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


def resized_session(session, model_path: Path, threads: int):
    """A new session on `model_path` with the providers (and their options) `session` uses,
    sized to `threads` CPUs."""
    import onnxruntime as ort

    providers = session.get_providers()
    provider_options = session.get_provider_options()
    return ort.InferenceSession(
        str(model_path),
        sess_options=session_options(threads),
        providers=providers,
        provider_options=[provider_options.get(p, {}) for p in providers],
    )


class Predictor:
    def __init__(self, models_dir: Path, cpus: int | None = None):
        # ModelMissing names the missing file and the fix.
        paths = {name: models.locate(models_dir, file) for name, file in MODEL_FILES.items()}
        self.threads = max(1, int(cpus if cpus is not None else cpu.available_cpus()))
        # DeepFace reads its weights from $DEEPFACE_HOME/.deepface/weights and must never try to
        # download while serving: every file was checked above.
        os.environ["DEEPFACE_HOME"] = str(Path(models_dir).resolve())
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "onnx"
        from deepface import DeepFace
        from deepface.commons import onnx_utils
        from deepface.modules import preprocessing

        self._resize = preprocessing.resize_image
        self._run_session = onnx_utils.run_session
        self.clients = {}
        for name in MODEL_FILES:
            start = time.perf_counter()
            client = DeepFace.build_model(task="facial_attribute", model_name=name)
            # DeepFace keeps its client in a process-wide cache, so DeepFace.analyze in this
            # process uses the resized session too.
            client.model = resized_session(client.model, paths[name], self.threads)
            self.clients[name] = client
            metrics.MODEL_LOAD.labels(name.lower()).set(time.perf_counter() - start)
        log(logger, logging.INFO, "attribute models loaded", models=list(MODEL_FILES), threads=self.threads,
            providers=self.clients["Age"].model.get_providers(), spinning=False)

    @property
    def model_infos(self) -> list[tuple[str, str, str]]:
        return [(f"deepface_{n.lower()}", n.lower(), f) for n, f in MODEL_FILES.items()]

    def prepare(self, face_bgr: np.ndarray) -> np.ndarray:
        """One face (uint8 BGR) to DeepFace's model input: (224, 224, 3) float32 in [0, 1]."""
        img = face_bgr.astype(np.float64)
        if img.max() > 1:
            img = img / 255
        return self._resize(img=img, target_size=INPUT_SIZE)[0]

    def predict(self, batch: np.ndarray) -> list[Attributes]:
        """Age, gender and emotion for a (n, 224, 224, 3) batch, in one inference per model."""
        n = len(batch)
        with metrics.observe_inference("age", n):
            ages = np.atleast_2d(self._run_session(self.clients["Age"].model, batch))
        with metrics.observe_inference("gender", n):
            genders = np.atleast_2d(self.clients["Gender"].predict(batch))
        with metrics.observe_inference("emotion", n):
            emotions = np.atleast_2d(self.clients["Emotion"].predict(batch))
        out = []
        for age_dist, gender, emotion in zip(ages, genders, emotions):
            low, high = age_interval(age_dist)
            years = float(np.sum(age_dist * np.arange(len(age_dist))))
            total = float(emotion.sum())
            scores = emotion / total if total > 0 else np.full(len(EMOTIONS), 1 / len(EMOTIONS))
            out.append(Attributes(years, min(low, years), max(high, years),
                                  float(np.clip(gender[0], 0, 1)), scores.astype(np.float64)))
        return out
