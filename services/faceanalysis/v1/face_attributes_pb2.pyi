from faceanalysis.v1 import common_pb2 as _common_pb2
from faceanalysis.v1 import face_landmark_pb2 as _face_landmark_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictAttributesRequest(_message.Message):
    __slots__ = ("crops", "tasks")
    CROPS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    crops: _containers.RepeatedCompositeFieldContainer[_face_landmark_pb2.AlignedCrop]
    tasks: _containers.RepeatedScalarFieldContainer[_common_pb2.Action]
    def __init__(self, crops: _Optional[_Iterable[_Union[_face_landmark_pb2.AlignedCrop, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.Action, str]]] = ...) -> None: ...

class FaceAttributeSet(_message.Message):
    __slots__ = ("age", "gender", "emotion")
    AGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    age: _common_pb2.Age
    gender: _common_pb2.GenderPrediction
    emotion: _common_pb2.EmotionPrediction
    def __init__(self, age: _Optional[_Union[_common_pb2.Age, _Mapping]] = ..., gender: _Optional[_Union[_common_pb2.GenderPrediction, _Mapping]] = ..., emotion: _Optional[_Union[_common_pb2.EmotionPrediction, _Mapping]] = ...) -> None: ...

class PredictAttributesResponse(_message.Message):
    __slots__ = ("attributes", "models", "timings")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[FaceAttributeSet]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    def __init__(self, attributes: _Optional[_Iterable[_Union[FaceAttributeSet, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ...) -> None: ...
