"""Per-request analysis options, checked and normalised in one place.

The public AnalysisOptions (common.proto) become a frozen `Options` here, in image-input, before
any work is done; a bad value is an `InvalidOption` (INVALID_ARGUMENT) whose message names the
field and its allowed range. image-input then passes on to each peer only what it needs:
face-landmark gets a DetectFacesRequest built by `DetectOptions.request` (threshold, min_face,
whether landmarks and crops are wanted), face-attributes the attribute tasks. The peers check
what they receive with the same functions, so the rules live here once.

Which models answer a request, with which parameters, follows from the options alone
(`DetectOptions.describe`, `Options.answering_models`): the peers list exactly those in their
answers, and image-input derives the cache key from the same list (image_input/fingerprint.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import grpc

from faceanalysis import models
from faceanalysis.runtime.inputerror import InputError
from faceanalysis.v1 import common_pb2, face_attributes_pb2, face_landmark_pb2

# Action enum value -> the name a result, a metric and a cache key use for it.
ACTIONS = {
    common_pb2.ACTION_LANDMARKS: "landmarks",
    common_pb2.ACTION_AGE: "age",
    common_pb2.ACTION_GENDER: "gender",
    common_pb2.ACTION_EMOTION: "emotion",
}
ACTION_VALUES = {name: value for value, name in ACTIONS.items()}
# The attribute tasks, in the order face-attributes runs their models; equal to their ModelInfo.task.
ATTRIBUTE_TASKS = ("age", "gender", "emotion")
ALL_ACTIONS = frozenset(ACTIONS.values())
# ModelInfo.task of face-landmark's models.
DETECTION_TASK, LANDMARKS_TASK = "face_detection", "landmarks"
# A face larger than this many pixels on its shorter side is beyond any photo the caps admit in
# practice; a value above it is a mistake (or an attempt to search nothing), not a request.
MAX_MIN_FACE = 10000
# The face sizes in a crop that a request may ask for (DetectFacesRequest.face_size): below 16 px
# no model sees a face; above 2048 the crop cap (CROP_SIZE <= 2048) decides anyway.
FACE_SIZE_RANGE = (16, 2048)


class InvalidOption(InputError):
    """An option outside its allowed range: the client's mistake, INVALID_ARGUMENT."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_threshold(value: float, field: str = "options.detection_threshold") -> float | None:
    """A detection threshold: None for 0 (the server's DETECTION_THRESHOLD), else the value,
    rounded to the 6 digits a proto float carries (0.95f is 0.949999988)."""
    if value == 0:
        return None
    if not (0 < value < 1):  # NaN fails too
        raise InvalidOption(f"{field} must be in (0, 1), or 0 for the server's default; got {value:g}")
    return float(f"{value:.6g}")


def check_min_face(value: int, field: str = "options.min_face") -> int | None:
    """A smallest face size in pixels: None for 0 (the server's DETECTION_MIN_FACE), else the value."""
    if value == 0:
        return None
    if not 0 < value <= MAX_MIN_FACE:
        raise InvalidOption(f"{field} must be between 1 and {MAX_MIN_FACE} pixels, or 0 for the server's "
                            f"default; got {value}")
    return int(value)


def check_face_size(value: int, field: str = "face_size") -> int | None:
    """The longest face side wanted in a crop: None for 0 (the crop size alone decides)."""
    if value == 0:
        return None
    low, high = FACE_SIZE_RANGE
    if not low <= value <= high:
        raise InvalidOption(f"{field} must be between {low} and {high} pixels, or 0 for the crop size alone; "
                            f"got {value}")
    return int(value)


def check_actions(values: Iterable[int], field: str = "options.actions",
                  allowed: Iterable[str] = ALL_ACTIONS) -> frozenset[str]:
    """Action enum values to their names; empty means every allowed one."""
    allowed = frozenset(allowed)
    names = set()
    for value in values:
        name = ACTIONS.get(value)
        if name not in allowed:
            choices = ", ".join(common_pb2.Action.Name(v) for v in sorted(ACTION_VALUES[n] for n in allowed))
            shown = common_pb2.Action.Name(value) if value in common_pb2.Action.values() else str(value)
            raise InvalidOption(f"{field} may hold only {choices} (none means all); got {shown}")
        names.add(name)
    return frozenset(names) if names else allowed


@dataclass(frozen=True)
class DetectOptions:
    """What face-landmark is asked for (DetectFacesRequest's options, normalised)."""
    threshold: float | None = None  # None: the server's DETECTION_THRESHOLD
    min_face: int | None = None  # None: the server's DETECTION_MIN_FACE, and no face is dropped for size
    landmarks: bool = True  # return the 68 points
    crops: bool = True  # return aligned crops (face-attributes has work to do)
    # The longest face side the attribute models need in a crop (None: CROP_SIZE alone). Not a
    # client's option: image-input derives it from face-attributes' models. The landmark model's
    # entry names it, so it is in the cache key (for the 30 s after a model change in which
    # image-input may still ask for the old models' size, results get a key of their own).
    face_size: int | None = None

    @classmethod
    def from_request(cls, request: face_landmark_pb2.DetectFacesRequest) -> DetectOptions:
        return cls(check_threshold(request.detection_threshold, "detection_threshold"),
                   check_min_face(request.min_face, "min_face"), not request.skip_landmarks, not request.skip_crops,
                   check_face_size(request.face_size))

    def request(self, image: bytes) -> face_landmark_pb2.DetectFacesRequest:
        return face_landmark_pb2.DetectFacesRequest(
            image=image, detection_threshold=self.threshold or 0, min_face=self.min_face or 0,
            skip_landmarks=not self.landmarks, skip_crops=not self.crops, face_size=self.face_size or 0)

    @property
    def runs_landmarker(self) -> bool:
        """Whether dlib's 68 points may be computed: for themselves, or to level a crop."""
        return self.landmarks or self.crops

    def describe(self, model: common_pb2.ModelInfo) -> common_pb2.ModelInfo | None:
        """`model` (one of face-landmark's) as it answers under these options, with the parameters it
        ran with; None when it does not run. The landmark model is named whenever landmarks or crops
        are asked for: its entry carries the crop size (and the face size crops were shrunk to),
        and crops may be levelled by its eyes."""
        if model.task == LANDMARKS_TASK and not self.runs_landmarker:
            return None
        changes = {}
        if model.task == DETECTION_TASK:
            if self.threshold is not None:
                changes["detection_threshold"] = models.parameter(self.threshold)
            if self.min_face is not None:
                if "detection_min_face" in model.parameters:  # the detectors whose search it sizes (YuNet)
                    changes["detection_min_face"] = models.parameter(self.min_face)
                changes["min_face"] = models.parameter(self.min_face)  # smaller faces are dropped
        elif model.task == LANDMARKS_TASK and self.crops and self.face_size is not None:
            changes["face_size"] = models.parameter(self.face_size)
        if not changes:
            return model
        out = common_pb2.ModelInfo()
        out.CopyFrom(model)
        out.parameters.update(changes)
        return out


@dataclass(frozen=True)
class Options:
    """One request's AnalysisOptions, checked and normalised."""
    actions: frozenset[str] = ALL_ACTIONS
    threshold: float | None = None
    min_face: int | None = None
    skip_cache: bool = False
    no_store: bool = False

    @classmethod
    def parse(cls, message: common_pb2.AnalysisOptions) -> Options:
        """Raises InvalidOption for a value outside its range."""
        return cls(check_actions(message.actions), check_threshold(message.detection_threshold),
                   check_min_face(message.min_face), message.skip_cache, message.no_store)

    @property
    def attribute_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in ATTRIBUTE_TASKS if t in self.actions)

    @property
    def detect(self) -> DetectOptions:
        return DetectOptions(self.threshold, self.min_face, "landmarks" in self.actions, bool(self.attribute_tasks))

    def attributes_request(self, crops) -> face_attributes_pb2.PredictAttributesRequest:
        """The call to face-attributes for `crops`; all three tasks travel as none (the default)."""
        tasks = self.attribute_tasks
        values = [] if len(tasks) == len(ATTRIBUTE_TASKS) else [ACTION_VALUES[t] for t in tasks]
        return face_attributes_pb2.PredictAttributesRequest(crops=crops, tasks=values)

    def answering_models(self, described: Iterable[common_pb2.ModelInfo],
                         face_size: int | None = None) -> list[common_pb2.ModelInfo]:
        """Of the peers' models (as DescribeModels lists them), those that answer a request with these
        options, with the parameters they run with: what the result will name. `face_size`: what
        image-input asks face-landmark to shrink crops to (DetectOptions.face_size)."""
        detect = replace(self.detect, face_size=face_size)
        out = []
        for model in described:
            if model.task in ATTRIBUTE_TASKS:
                if model.task in self.actions:
                    out.append(model)
            elif (answering := detect.describe(model)) is not None:
                out.append(answering)
        return out

    def cache_token(self) -> str:
        """What of these options the cache key must hold besides the answering models (whose
        parameters carry the effective threshold and min_face): the actions, as a sorted set.
        Empty for all of them, so such keys stay as they were before options existed."""
        return "" if self.actions == ALL_ACTIONS else "+".join(sorted(self.actions))


def attribute_tasks(values: Iterable[int]) -> tuple[str, ...]:
    """PredictAttributesRequest.tasks to task names in run order; empty means all three."""
    names = check_actions(values, "tasks", allowed=ATTRIBUTE_TASKS)
    return tuple(t for t in ATTRIBUTE_TASKS if t in names)
