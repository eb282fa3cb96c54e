"""Typed results of the Python client: frozen dataclasses made from the proto `AnalysisResult`.

The proto stays reachable (`Analysis.proto`, `to_proto()`), and `to_dict()` is the very JSON
mapping the CLI writes and the HTTP API serves (faceanalysis.runtime.results.to_json), so the
typed view loses nothing. What a request did not ask for is None (age, gender, emotion) or
empty (landmarks): the server leaves those fields unset, and this view keeps that visible
instead of turning it into zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from faceanalysis.runtime import results
from faceanalysis.v1 import common_pb2, image_input_pb2

# Gender as DeepFace spells it ("Man"/"Woman"), lower-cased; GENDER_UNSPECIFIED never comes back.
_GENDERS = {common_pb2.GENDER_MAN: "man", common_pb2.GENDER_WOMAN: "woman"}


@dataclass(frozen=True)
class Box:
    """Face box in the photo's pixels (after EXIF orientation)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Age:
    """Apparent age in years; `low`..`high` holds the central 80 % of the model's distribution."""

    years: float
    low: float
    high: float


@dataclass(frozen=True)
class Gender:
    label: str  # "man" or "woman"
    confidence: float  # probability of `label`, in [0, 1]


@dataclass(frozen=True)
class Emotion:
    dominant: str  # angry, disgust, fear, happy, sad, surprise or neutral
    scores: dict[str, float]  # probability per class; the seven sum to 1

    @property
    def confidence(self) -> float:
        """Probability of the dominant emotion."""
        return self.scores.get(self.dominant, 0.0)


@dataclass(frozen=True)
class Face:
    box: Box
    detection_score: float
    landmarks: list[tuple[float, float]]  # 68 (x, y) in iBUG 300-W order; empty when not asked for
    age: Age | None  # None when not asked for
    gender: Gender | None
    emotion: Emotion | None

    @classmethod
    def from_proto(cls, face: common_pb2.Face) -> Face:
        gender = _GENDERS.get(face.gender.label) if face.HasField("gender") else None
        return cls(
            box=Box(face.box.x, face.box.y, face.box.width, face.box.height),
            detection_score=face.detection_score,
            landmarks=[(p.x, p.y) for p in face.landmarks],
            age=Age(face.age.years, face.age.low, face.age.high) if face.HasField("age") else None,
            gender=Gender(gender, face.gender.confidence) if gender else None,
            emotion=(Emotion(face.emotion.dominant, dict(face.emotion.scores))
                     if face.HasField("emotion") else None),
        )


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    sha256: str  # of the bytes sent (an array is sent as the PNG the client made of it)
    format: str  # JPEG, PNG, WEBP, ...


@dataclass(frozen=True)
class Model:
    """A model that contributed: what it does, the exact file (sha256) and its settings."""

    name: str
    task: str
    file: str
    sha256: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class Analysis:
    """One analyzed image. `proto` is the AnalysisResult it was made from."""

    analysis_id: str
    image: ImageInfo
    faces: list[Face]
    models: list[Model]
    cached: bool  # answered from the cache of an identical earlier image (with the same options)
    stored: bool  # kept by data-storage (Redis and archive); False with no_store
    created_at: datetime | None  # timezone-aware UTC
    timings: dict[str, float] = field(repr=False)  # seconds per pipeline stage
    proto: common_pb2.AnalysisResult = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, result: common_pb2.AnalysisResult) -> Analysis:
        created = None
        if result.HasField("created_at"):
            created = result.created_at.ToDatetime(tzinfo=timezone.utc)
        return cls(
            analysis_id=result.analysis_id,
            image=ImageInfo(result.image.width, result.image.height, result.image.sha256, result.image.format),
            faces=[Face.from_proto(f) for f in result.faces],
            models=[Model(m.name, m.task, m.file, m.sha256, dict(m.parameters)) for m in result.models],
            cached=result.cached,
            stored=result.stored,
            created_at=created,
            timings={t.stage: t.seconds for t in result.timings},
            proto=result,
        )

    def to_proto(self) -> common_pb2.AnalysisResult:
        """A copy of the AnalysisResult (the dataclass stays frozen even if the copy is changed)."""
        copy = common_pb2.AnalysisResult()
        copy.CopyFrom(self.proto)
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping of `faceanalysis analyze` files and the HTTP API (proto field names,
        enums by name, int64 and timestamps as strings)."""
        return results.to_dict(self.proto)

    def to_json(self, indent: int | None = None) -> str:
        return results.to_json(self.proto, indent=indent)


@dataclass(frozen=True)
class Summary:
    """One entry of `Client.list()`."""

    analysis_id: str
    face_count: int
    image_sha256: str

    @classmethod
    def from_proto(cls, summary: image_input_pb2.AnalysisSummary) -> Summary:
        return cls(summary.analysis_id, summary.face_count, summary.image_sha256)
