from faceanalysis.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RawImage(_message.Message):
    __slots__ = ("width", "height", "bgr")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BGR_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    bgr: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., bgr: _Optional[bytes] = ...) -> None: ...

class DetectFacesRequest(_message.Message):
    __slots__ = ("image", "detection_threshold", "min_face", "skip_landmarks", "skip_crops", "face_size")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DETECTION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_FIELD_NUMBER: _ClassVar[int]
    SKIP_LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    SKIP_CROPS_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    detection_threshold: float
    min_face: int
    skip_landmarks: bool
    skip_crops: bool
    face_size: int
    def __init__(self, image: _Optional[bytes] = ..., detection_threshold: _Optional[float] = ..., min_face: _Optional[int] = ..., skip_landmarks: _Optional[bool] = ..., skip_crops: _Optional[bool] = ..., face_size: _Optional[int] = ...) -> None: ...

class AlignedCrop(_message.Message):
    __slots__ = ("image", "face_width", "face_height")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    FACE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: RawImage
    face_width: float
    face_height: float
    def __init__(self, image: _Optional[_Union[RawImage, _Mapping]] = ..., face_width: _Optional[float] = ..., face_height: _Optional[float] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("box", "detection_score", "landmarks", "crop")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.BoundingBox
    detection_score: float
    landmarks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point]
    crop: AlignedCrop
    def __init__(self, box: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., detection_score: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[_common_pb2.Point, _Mapping]]] = ..., crop: _Optional[_Union[AlignedCrop, _Mapping]] = ...) -> None: ...

class DetectFacesResponse(_message.Message):
    __slots__ = ("faces", "models", "timings")
    FACES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[DetectedFace]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    def __init__(self, faces: _Optional[_Iterable[_Union[DetectedFace, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ...) -> None: ...
