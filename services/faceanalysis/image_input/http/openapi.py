"""The OpenAPI 3.1 document of the HTTP/JSON API (GET /openapi.json), built in code.

Paths and operations come from app.ROUTES, the table the server's routes are made from; query
parameters from the fields of each route's protobuf request message (query.py reads them by the
same rules); response schemas from the faceanalysis.v1 descriptors (schemas.py). Nothing here is
written twice, so the document cannot disagree with the server.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from importlib import metadata

from faceanalysis.image_input.http import errors, query, upload
from faceanalysis.image_input.http.app import ROUTES, Route
from faceanalysis.image_input.http.schemas import SchemaSet
from faceanalysis.runtime import auth, logging as fa_logging

# What a parameter means, where its name does not say it all (the protos' comments are not in
# the generated descriptors).
PARAMETER_DOCS = {
    "actions": "What to compute besides boxes: landmarks, age, gender, emotion (comma-separated, or the "
               "parameter repeated); absent means all four.",
    "detection_threshold": "Minimum detection score, in (0, 1); absent or 0: the server's default.",
    "min_face": "Smallest face to report, as the shorter side of its box in the photo's pixels; absent or 0: "
                "the server's default.",
    "skip_cache": "Analyze even when an identical image was answered before.",
    "no_store": "Keep nothing: the result is not stored (and not answered from the cache).",
    "page_size": "At most this many analyses; absent or 0: the server's default (50).",
    "page_token": "`next_page_token` of the previous page.",
}
SECURITY = [{"bearer": []}, {"apiKeyHeader": []}, {}]  # {}: deployments with API keys off need none


def _media(response) -> dict:
    if isinstance(response, str):
        schema = {"type": "object"} if response == "application/json" else {"type": "string"}
        return {response: {"schema": schema}}
    return {}


def _path_parameters(route: Route) -> list[dict]:
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "string", **({"pattern": route.path_patterns[name]}
                                             if name in route.path_patterns else {})}}
            for name in re.findall(r"\{(\w+)\}", route.path)]


def _query_parameters(route: Route) -> list[dict]:
    if route.query is None:
        return []
    parameters = []
    for field in query.fields(route.query.DESCRIPTOR, route.query_exclude):
        parameter = {"name": field.name, "in": "query", "required": False, "schema": query.schema(field)}
        if field.is_repeated:
            parameter.update(style="form", explode=False)
        if field.name in PARAMETER_DOCS:
            parameter["description"] = PARAMETER_DOCS[field.name]
        parameters.append(parameter)
    return parameters


def _upload_body() -> dict:
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    raw = {"schema": binary}
    form = {"schema": {"type": "object", "required": [upload.FIELD], "properties": {upload.FIELD: binary}}}
    return {"required": True, "description": "The image, at most FACEANALYSIS_MAX_IMAGE_BYTES (default 20 MiB).",
            "content": {"image/*": raw, "application/octet-stream": raw, upload.MULTIPART: form}}


def _error(status: int) -> dict:
    headers = {fa_logging.REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
    if status == 503:
        headers["Retry-After"] = {"description": "Seconds to wait before sending again.",
                                  "schema": {"type": "integer", "minimum": 0}}
    return {"description": HTTPStatus(status).phrase, "headers": headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(route: Route, schemas: SchemaSet) -> dict:
    ok = {"description": "OK", "headers": {fa_logging.REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
          "content": _media(route.response) or {"application/json": {"schema": schemas.ref(route.response.DESCRIPTOR)}}}
    operation = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": ["analyses" if route.needs_key else "documents"],
        "parameters": _path_parameters(route) + _query_parameters(route),
        "responses": {"200": ok, **{str(s): _error(s) for s in sorted({*route.errors, 405})}, "default": _error(500)},
        "security": SECURITY if route.needs_key else [],
    }
    if route.description:
        operation["description"] = route.description
    if route.upload:
        operation["requestBody"] = _upload_body()
    return operation


def error_schema() -> dict:
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "status", "message"], "properties": {
            "code": {"type": "string", "enum": errors.CODES, "description": "the gRPC status code's name"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "the HTTP status"},
            "message": {"type": "string"}}}}}


def document(routes: tuple[Route, ...] = ROUTES) -> dict:
    schemas = SchemaSet()
    paths: dict[str, dict] = {}
    # Only the routes of the table: the HEAD the server answers beside every GET (app.served_methods) is
    # left out. HEAD is part of what GET means (RFC 9110 9.3.2), so a `head` operation per GET would add
    # nothing but a second, body-less copy of each, with operationIds that client generators would turn into
    # useless methods; the description says it once instead, and test_http compares the served routes with
    # the documented ones plus exactly that HEAD.
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "faceanalysis",
            "version": metadata.version("faceanalysis"),
            "summary": "Faces in photos: boxes, 68 landmarks, age, gender and emotion.",
            "description": "The HTTP/JSON form of the gRPC API faceanalysis.v1.FaceAnalysis: the same calls, "
                           "limits, API keys and errors. Results are protobuf's JSON mapping with the proto's "
                           "field names. Errors carry the gRPC status code's name. Every GET also answers "
                           "HEAD: the same status and headers, no body.",
        },
        "paths": paths,
        "components": {
            "schemas": {**schemas.schemas, "Error": error_schema()},
            "headers": {"RequestId": {"description": "The request's id: the caller's x-request-id when it is "
                                                     "plain and short, else a new one; it is in every log line.",
                                      "schema": {"type": "string"}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": f"An API key, as `{auth.HEADER}: Bearer <key>`, when the server has keys "
                                          "on."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                 "description": "The same API key in its own header."},
            },
        },
    }
