"""AnalysisResult <-> JSON (protobuf's JSON mapping, proto field names kept) and id rules."""

from __future__ import annotations

import re

import grpc

from google.protobuf import json_format

from faceanalysis.v1 import common_pb2

# Analysis ids are 32 lowercase hex characters (uuid4().hex). Anything else is refused before
# it can reach a Redis key or a file name.
ANALYSIS_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_id(analysis_id: str) -> bool:
    return bool(ANALYSIS_ID.match(analysis_id or ""))


def to_json(result: common_pb2.AnalysisResult, indent: int | None = None) -> str:
    return json_format.MessageToJson(result, preserving_proto_field_name=True, indent=indent,
                                     always_print_fields_with_no_presence=True)


def to_dict(result: common_pb2.AnalysisResult) -> dict:
    """The mapping `to_json` writes, as Python objects (what json.loads(to_json(result)) gives)."""
    return json_format.MessageToDict(result, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def from_json(text: str) -> common_pb2.AnalysisResult:
    return json_format.Parse(text, common_pb2.AnalysisResult(), ignore_unknown_fields=True)


async def require_valid_id(analysis_id: str, context) -> None:
    """Abort the call with INVALID_ARGUMENT unless `analysis_id` is a well-formed id."""
    if not valid_id(analysis_id):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"analysis_id must be 32 lowercase hex characters, got {analysis_id[:80]!r}")
