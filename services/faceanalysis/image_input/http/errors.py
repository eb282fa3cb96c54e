"""gRPC status -> HTTP status, and the one JSON shape every HTTP error has.

    {"error": {"code": "<gRPC code name>", "status": <HTTP status>, "message": "..."}}

The code is gRPC's name even for errors the HTTP layer finds itself (a wrong method is
UNIMPLEMENTED, an unsupported Content-Type INVALID_ARGUMENT), so a client can branch on one
vocabulary whichever API it uses.
"""

from __future__ import annotations

import json

import grpc
from aiohttp import web

from faceanalysis.runtime import work

# RESOURCE_EXHAUSTED is two things in this API: input over a cap (413, no retry helps) and a
# busy server (503, marked by work.OVERLOADED in the trailing metadata, retry after a moment).
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
OVERLOADED_STATUS = 503
# Seconds a client should wait before sending again: a busy pod frees a slot within about an
# analysis; a peer that restarts is back within a few seconds (runtime/channels.py retries it).
RETRY_AFTER = {"overloaded": 1, "unavailable": 5}
# The gRPC code an error the HTTP layer finds itself carries, by HTTP status.
HTTP_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED",
              415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}
# Every code a response of this API may carry (the OpenAPI document lists them).
CODES = sorted({code.name for code in grpc.StatusCode if code != grpc.StatusCode.OK})


class ApiError(Exception):
    """An error answer: HTTP status, gRPC code name, message and extra headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or HTTP_CODES.get(status, "UNKNOWN" if status >= 500 else "INVALID_ARGUMENT")
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "status": self.status, "message": self.message}}
        return web.Response(status=self.status, text=json.dumps(body), content_type="application/json",
                            headers=self.headers)


def from_rpc(err: grpc.aio.AioRpcError) -> ApiError:
    """The HTTP answer to a failed call of image-input's own gRPC API."""
    code, message = err.code(), err.details() or err.code().name
    headers = {}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and work.is_overloaded(err):
        return ApiError(OVERLOADED_STATUS, message, code.name, {"Retry-After": str(RETRY_AFTER["overloaded"])})
    if code == grpc.StatusCode.UNAVAILABLE:
        headers["Retry-After"] = str(RETRY_AFTER["unavailable"])
    if code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"  # RFC 9110: a 401 names the scheme it wants
    return ApiError(STATUS.get(code, 500), message, code.name, headers)


def from_http(exc: web.HTTPException) -> ApiError:
    """aiohttp's own answers (no route, wrong method, ...) in this API's shape, their headers kept."""
    keep = {name: value for name, value in exc.headers.items() if name.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        message = "no such path; the API is under /v1/analyses, its description at /openapi.json"
    elif exc.status == 405:
        message = f"{getattr(exc, 'method', 'this method')} is not allowed here; allowed: {keep.get('Allow', 'none')}"
    else:
        message = exc.text or exc.reason
    return ApiError(exc.status, message, headers=keep)
