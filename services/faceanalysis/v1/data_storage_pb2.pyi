from faceanalysis.v1 import common_pb2 as _common_pb2
from faceanalysis.v1 import image_input_pb2 as _image_input_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoreResultRequest(_message.Message):
    __slots__ = ("result", "cache_key", "tenant")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    result: _common_pb2.AnalysisResult
    cache_key: str
    tenant: str
    def __init__(self, result: _Optional[_Union[_common_pb2.AnalysisResult, _Mapping]] = ..., cache_key: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class StoreResultResponse(_message.Message):
    __slots__ = ("archive_path",)
    ARCHIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    archive_path: str
    def __init__(self, archive_path: _Optional[str] = ...) -> None: ...

class LookupCacheRequest(_message.Message):
    __slots__ = ("cache_key", "tenant")
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    cache_key: str
    tenant: str
    def __init__(self, cache_key: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("analysis_id", "tenant")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    tenant: str
    def __init__(self, analysis_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListResultsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DeleteResultRequest(_message.Message):
    __slots__ = ("analysis_id", "tenant")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    tenant: str
    def __init__(self, analysis_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class StoredResult(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _common_pb2.AnalysisResult
    def __init__(self, result: _Optional[_Union[_common_pb2.AnalysisResult, _Mapping]] = ...) -> None: ...
