import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gender(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENDER_UNSPECIFIED: _ClassVar[Gender]
    GENDER_WOMAN: _ClassVar[Gender]
    GENDER_MAN: _ClassVar[Gender]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_LANDMARKS: _ClassVar[Action]
    ACTION_AGE: _ClassVar[Action]
    ACTION_GENDER: _ClassVar[Action]
    ACTION_EMOTION: _ClassVar[Action]
GENDER_UNSPECIFIED: Gender
GENDER_WOMAN: Gender
GENDER_MAN: Gender
ACTION_UNSPECIFIED: Action
ACTION_LANDMARKS: Action
ACTION_AGE: Action
ACTION_GENDER: Action
ACTION_EMOTION: Action

class BoundingBox(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Age(_message.Message):
    __slots__ = ("years", "low", "high")
    YEARS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    years: float
    low: float
    high: float
    def __init__(self, years: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class GenderPrediction(_message.Message):
    __slots__ = ("label", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: Gender
    confidence: float
    def __init__(self, label: _Optional[_Union[Gender, str]] = ..., confidence: _Optional[float] = ...) -> None: ...

class EmotionPrediction(_message.Message):
    __slots__ = ("dominant", "scores")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DOMINANT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    dominant: str
    scores: _containers.ScalarMap[str, float]
    def __init__(self, dominant: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "detection_score", "landmarks", "age", "gender", "emotion")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    detection_score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    age: Age
    gender: GenderPrediction
    emotion: EmotionPrediction
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., detection_score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., age: _Optional[_Union[Age, _Mapping]] = ..., gender: _Optional[_Union[GenderPrediction, _Mapping]] = ..., emotion: _Optional[_Union[EmotionPrediction, _Mapping]] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("width", "height", "sha256", "format")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    sha256: str
    format: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., sha256: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    seconds: float
    def __init__(self, stage: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "task", "file", "sha256", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    file: str
    sha256: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., file: _Optional[str] = ..., sha256: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DescribeModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class AnalysisOptions(_message.Message):
    __slots__ = ("skip_cache", "no_store", "actions", "detection_threshold", "min_face")
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    NO_STORE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_FIELD_NUMBER: _ClassVar[int]
    skip_cache: bool
    no_store: bool
    actions: _containers.RepeatedScalarFieldContainer[Action]
    detection_threshold: float
    min_face: int
    def __init__(self, skip_cache: _Optional[bool] = ..., no_store: _Optional[bool] = ..., actions: _Optional[_Iterable[_Union[Action, str]]] = ..., detection_threshold: _Optional[float] = ..., min_face: _Optional[int] = ...) -> None: ...

class AnalysisResult(_message.Message):
    __slots__ = ("analysis_id", "stored", "image", "faces", "timings", "models", "created_at", "cached", "storage_error")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    STORAGE_ERROR_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    stored: bool
    image: ImageInfo
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    created_at: _timestamp_pb2.Timestamp
    cached: bool
    storage_error: str
    def __init__(self, analysis_id: _Optional[str] = ..., stored: _Optional[bool] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cached: _Optional[bool] = ..., storage_error: _Optional[str] = ...) -> None: ...
