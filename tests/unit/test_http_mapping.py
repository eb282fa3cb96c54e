"""The HTTP layer's mappings that need no server: query parameters -> request messages, gRPC
status -> HTTP status, proto descriptors -> JSON Schema, and the listen address."""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from multidict import MultiDict

from faceanalysis.image_input.http import errors, query
from faceanalysis.image_input.http.errors import ApiError
from faceanalysis.image_input.http.listener import listen_host
from faceanalysis.image_input.http.schemas import SchemaSet
from faceanalysis.runtime import results, work
from faceanalysis.v1 import common_pb2, face_landmark_pb2, image_input_pb2


def options(*pairs) -> common_pb2.AnalysisOptions:
    return query.parse(MultiDict(pairs), common_pb2.AnalysisOptions())


def test_options_from_query():
    parsed = options(("actions", "age, EMOTION"), ("actions", "ACTION_LANDMARKS"), ("skip_cache", "true"),
                     ("no_store", "0"), ("detection_threshold", "0.5"), ("min_face", "+40"))
    assert list(parsed.actions) == [common_pb2.ACTION_AGE, common_pb2.ACTION_EMOTION, common_pb2.ACTION_LANDMARKS]
    assert parsed.skip_cache and not parsed.no_store
    assert parsed.detection_threshold == 0.5 and parsed.min_face == 40
    assert options() == common_pb2.AnalysisOptions()
    assert query.enum_names(common_pb2.Action.DESCRIPTOR) == {"landmarks": 1, "age": 2, "gender": 3, "emotion": 4}


@pytest.mark.parametrize("pairs, words", [
    ((("actions", "unspecified"),), "choose from landmarks, age, gender, emotion"),
    ((("detection_threshold", "inf"),), "decimal number"),
    ((("min_face", "-2147483649"),), "-2147483648 to 2147483647"),
    ((("min_face", "0x10"),), "whole number"),
    ((("no_store", "yes please"),), "true or false"),
    ((("image", "x"),), "unknown query parameter"),
])
def test_bad_options_name_the_parameter(pairs, words):
    with pytest.raises(ApiError) as err:
        options(*pairs)
    assert err.value.status == 400 and err.value.code == "INVALID_ARGUMENT"
    assert words in err.value.message and pairs[0][0] in err.value.message


def test_list_request_from_query():
    parsed = query.parse(MultiDict(page_size="10", page_token="abc"), image_input_pb2.ListAnalysesRequest())
    assert (parsed.page_size, parsed.page_token) == (10, "abc")


class _Failed(grpc.aio.AioRpcError):
    def __init__(self, code, trailing=()):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details="why")


@pytest.mark.parametrize("code, trailing, status", [
    (grpc.StatusCode.INVALID_ARGUMENT, (), 400), (grpc.StatusCode.UNAUTHENTICATED, (), 401),
    (grpc.StatusCode.PERMISSION_DENIED, (), 403), (grpc.StatusCode.NOT_FOUND, (), 404),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, (), 413), (grpc.StatusCode.RESOURCE_EXHAUSTED, work.OVERLOADED, 503),
    (grpc.StatusCode.UNAVAILABLE, (), 503), (grpc.StatusCode.DEADLINE_EXCEEDED, (), 504),
    (grpc.StatusCode.INTERNAL, (), 500), (grpc.StatusCode.UNKNOWN, (), 500),
])
def test_grpc_status_to_http(code, trailing, status):
    answer = errors.from_rpc(_Failed(code, trailing))
    assert (answer.status, answer.code, answer.message) == (status, code.name, "why")
    assert ("Retry-After" in answer.headers) == (status == 503)


def test_schemas_describe_protobufs_json_mapping():
    schemas = SchemaSet()
    ref = schemas.ref(common_pb2.AnalysisResult.DESCRIPTOR)
    result = common_pb2.AnalysisResult(analysis_id="a" * 32, faces=[common_pb2.Face(
        emotion=common_pb2.EmotionPrediction(dominant="happy", scores={"happy": 1.0}),
        gender=common_pb2.GenderPrediction(label=common_pb2.GENDER_MAN, confidence=0.9))])
    result.created_at.GetCurrentTime()
    validator = jsonschema.Draft202012Validator({**ref, "components": {"schemas": schemas.schemas}},
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(json.loads(results.to_json(result)))
    # what the mapping would not print is refused: a camelCase name, an enum as a number, a bad timestamp
    bad = json.loads(results.to_json(result))
    bad["faces"][0]["gender"]["label"] = 2
    assert not validator.is_valid(bad)
    bad = json.loads(results.to_json(result))
    bad["created_at"] = "yesterday"
    assert not validator.is_valid(bad)
    bad = json.loads(results.to_json(result))
    bad["analysisId"] = bad.pop("analysis_id")
    assert not validator.is_valid(bad)


def test_schemas_of_bytes_and_well_known_types():
    schemas = SchemaSet()
    schemas.ref(face_landmark_pb2.DESCRIPTOR.message_types_by_name["DetectFacesRequest"])
    image = schemas.schemas["DetectFacesRequest"]["properties"]["image"]
    assert image == {"type": "string", "contentEncoding": "base64"}
    assert schemas.ref(timestamp_pb2.Timestamp.DESCRIPTOR) == {"type": "string", "format": "date-time"}
    assert schemas.ref(struct_pb2.Struct.DESCRIPTOR) == {"type": "object"}


@pytest.mark.parametrize("bind_host, host", [("[::]", None), ("::", None), ("", None), ("127.0.0.1", "127.0.0.1"),
                                             ("[::1]", "::1"), ("0.0.0.0", "0.0.0.0")])
def test_listen_host(bind_host, host):
    assert listen_host(bind_host) == host
